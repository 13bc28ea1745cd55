"""BoxAcc and MaxBoxAcc (Choe et al. 2020): the predicted box at saliency thresholds eta, hit when
its IoU with a ground-truth box reaches delta.

Conventions (boxes, binarisation, components): see :mod:`opticam_rt.evaluation.localisation`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.evaluation._checks import check_map
from opticam_rt.evaluation.localisation.boxes import Threshold, box_iou, check_boxes
from opticam_rt.evaluation.localisation.components import largest_component_box, max_iou, threshold_value


#: Saliency thresholds eta (fractions of the map's max) of Choe et al. 2020's MaxBoxAcc:
#: 0.00, 0.01, ..., 0.99.
DEFAULT_BOX_THRESHOLDS: tuple[float, ...] = tuple(round(i * 0.01, 2) for i in range(100))
#: IoU thresholds delta averaged over by Choe et al. 2020's MaxBoxAccV2 and by Opti-CAM (B.5).
DEFAULT_BOX_IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)


def box_accuracy(saliency: np.ndarray, boxes: Sequence[Sequence[float]], threshold: Threshold = 0.5,
                 iou_threshold: float = 0.5, *, connectivity: int = 8) -> bool:
    """Box accuracy hit: ``max_B IoU(B, B_p^eta) >= delta``.

    Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR 2020,
    the BoxAcc / MaxBoxAcc metric: ``B_p^eta`` is the bounding box of the largest connected component of
    ``{p : S_p > eta}`` (here ``eta = threshold * max(S)``), compared with any ground-truth box
    at IoU threshold ``delta = iou_threshold``. The Opti-CAM paper's BA (eq. (B.5)) takes the
    best ``eta`` after averaging over images, then the mean over ``delta`` in {0.3, 0.5, 0.7}:
    see :func:`box_accuracy_grid` and :func:`max_box_accuracy`.
    """
    return max_iou(saliency, boxes, threshold, connectivity=connectivity) >= iou_threshold


def box_accuracy_grid(
    saliency: np.ndarray,
    boxes: Sequence[Sequence[float]],
    thresholds: Sequence[float] = DEFAULT_BOX_THRESHOLDS,
    iou_thresholds: Sequence[float] = DEFAULT_BOX_IOU_THRESHOLDS,
    *,
    connectivity: int = 8,
) -> np.ndarray:
    """Per-image BoxAcc hits for every (eta, delta); (len(thresholds), len(iou_thresholds)) bool."""
    s = check_map(saliency)
    gt = check_boxes(boxes, *s.shape)
    deltas = np.asarray(iou_thresholds, dtype=np.float64)
    grid = np.zeros((len(thresholds), deltas.size), dtype=bool)
    for i, eta in enumerate(thresholds):
        bp = largest_component_box(s > threshold_value(s, float(eta)), connectivity)
        best = 0.0 if bp is None else max(box_iou(b, bp) for b in gt)
        grid[i] = best >= deltas
    return grid


def max_box_accuracy(grids: np.ndarray) -> float:
    """MaxBoxAcc(%) from per-image grids (N, T, D): max over eta of the mean hit rate, mean over delta.

    Choe et al. 2020 (MaxBoxAccV2 with delta in {0.3, 0.5, 0.7}) and Opti-CAM eq. (B.5):
    "after averaging over the test images, we take the maximum of this measure over a set of
    values eta and then the average over a set of values delta".
    """
    g = np.asarray(grids, dtype=np.float64)
    if g.ndim != 3 or g.shape[0] == 0:
        raise InputError(f"max_box_accuracy takes per-image grids of shape (N, T, D), got {g.shape}")
    return float(g.mean(axis=0).max(axis=0).mean() * 100.0)
