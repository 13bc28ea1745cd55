"""Every per-image localisation metric of one map at once, under the standard or the Opti-CAM protocol.

Conventions (boxes, binarisation, components): see :mod:`opticam_rt.evaluation.localisation`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.evaluation._checks import check_map
from opticam_rt.evaluation.metric_names import PROTOCOLS
from opticam_rt.evaluation.localisation.box_accuracy import DEFAULT_BOX_IOU_THRESHOLDS, box_accuracy, box_accuracy_grid
from opticam_rt.evaluation.localisation.boxes import check_boxes
from opticam_rt.evaluation.localisation.components import max_iou
from opticam_rt.evaluation.localisation.official_metric import localisation_error, official_metric
from opticam_rt.evaluation.localisation.pixel_f1 import pixel_f1
from opticam_rt.evaluation.localisation.pointing import energy_pointing_game, pointing_game


def localisation_metrics(
    saliency: np.ndarray,
    boxes: Sequence[Sequence[float]],
    *,
    correct_class: bool | None = None,
    protocol: Literal["standard", "opticam"] = "standard",
    box_thresholds: Sequence[float] | None = None,
    box_iou_thresholds: Sequence[float] = DEFAULT_BOX_IOU_THRESHOLDS,
    connectivity: int = 8,
) -> dict[str, object]:
    """Per-image localisation metrics of one (H, W) map, in percent, ready to store as a record.

    Keys: ``SP`` (pointing game hit, 0 or 100), ``EP`` (energy pointing game), ``F1``,
    ``BoxAcc`` (hit at eta = 0.5 of max, IoU >= 0.5), ``LE``, and ``OM`` when
    ``correct_class`` is given; the mean over images of each value is the metric. With
    ``box_thresholds`` given, ``box_acc_grid`` (a T x D list of 0/1, see
    :func:`box_accuracy_grid`) is added, from which :mod:`opticam_rt.evaluation.report`
    derives MaxBoxAcc. SM needs the classifier: see :func:`saliency_metric`.

    ``protocol="standard"``: pointing game with 15 px tolerance, thresholded F1 at 0.5 of max,
    ILSVRC OM/LE (IoU >= 0.5), predicted box at the map's mean. ``protocol="opticam"``: the
    variants of the Opti-CAM paper's Table A.7: SP without tolerance (B.6), soft F1
    (B.3, B.4), continuous OM/LE (B.1, B.2), predicted box at the map's mean.
    """
    if protocol not in PROTOCOLS:
        raise InputError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    s = check_map(saliency)
    gt = check_boxes(boxes, *s.shape)
    opticam = protocol == "opticam"
    iou = max_iou(s, gt, "mean", connectivity=connectivity)
    iou_thr = None if opticam else 0.5
    out: dict[str, object] = {
        "SP": 100.0 * pointing_game(s, gt, tolerance=0 if opticam else 15),
        "EP": 100.0 * energy_pointing_game(s, gt),
        "F1": 100.0 * pixel_f1(s, gt, threshold=None if opticam else 0.5),
        "BoxAcc": 100.0 * box_accuracy(s, gt, 0.5, 0.5, connectivity=connectivity),
        "LE": 100.0 * float(localisation_error(np.array([iou]), iou_thr)[0]),
        "max_iou": iou,
    }
    if correct_class is not None:
        out["OM"] = 100.0 * float(official_metric(np.array([iou]), np.array([bool(correct_class)]), iou_thr)[0])
    if box_thresholds is not None:
        grid = box_accuracy_grid(s, gt, box_thresholds, box_iou_thresholds, connectivity=connectivity)
        out["box_acc_grid"] = grid.astype(int).tolist()
    return out
