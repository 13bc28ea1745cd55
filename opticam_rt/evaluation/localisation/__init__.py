"""Localisation metrics of a saliency map against ground-truth boxes (pointing games, BoxAcc, F1, OM/LE, SM).

Conventions. A box is ``(x0, y0, x1, y1)`` in model-resolution pixels, inclusive-exclusive:
it covers columns ``x0 .. x1-1`` and rows ``y0 .. y1-1``. An image may have several
ground-truth boxes; ``U`` below is the union of their pixels. Saliency maps are (H, W) at
the model resolution. Boxes are clipped to the image; a box that is empty after clipping
is an InputError.

The Opti-CAM paper (Zhang et al., arXiv 2301.07002 / CVIU 2024, Appendix B, eqs. (B.1)-(B.7),
Table A.7) reports OM, LE, F1, BoxAcc, SP, EP and SM. Its predicted box ``B_p`` is the
bounding box of the largest connected component of the map binarised at the map's
**average value**; this is ``predicted_box(s, threshold="mean")``. Where the paper's table
uses a variant that differs from the usual definition, the function's docstring says so
and a parameter selects it; :func:`localisation_metrics` with ``protocol="opticam"``
computes the paper's variants in one call.

Binarisation: a pixel is foreground when ``S > t`` (strict, as in the paper's eq. (B.5)
``{p : S_p > eta}`` and in Choe et al.'s ``cv2.threshold(..., THRESH_BINARY)``), where ``t``
is the map's mean (``threshold="mean"``) or ``threshold * max(S)`` for a float threshold
(for maps min-max normalised to [0, 1] this equals the absolute threshold of Choe et al.).
A map with no foreground pixel (e.g. a constant map) has no predicted box: IoU 0.
Connected components use 8-connectivity by default (4 on request), computed in NumPy
(row runs joined by union-find), so no SciPy or OpenCV is needed.
"""

from __future__ import annotations

from opticam_rt.evaluation.localisation.boxes import Box, box_iou, boxes_mask
from opticam_rt.evaluation.localisation.components import connected_components, max_iou, predicted_box
from opticam_rt.evaluation.localisation.pointing import energy_pointing_game, pointing_game
from opticam_rt.evaluation.localisation.box_accuracy import DEFAULT_BOX_IOU_THRESHOLDS, DEFAULT_BOX_THRESHOLDS, box_accuracy, box_accuracy_grid, max_box_accuracy
from opticam_rt.evaluation.localisation.pixel_f1 import pixel_f1
from opticam_rt.evaluation.localisation.official_metric import localisation_error, official_metric
from opticam_rt.evaluation.localisation.saliency_metric import resize_bilinear, saliency_metric
from opticam_rt.evaluation.localisation.protocols import localisation_metrics

__all__ = [
    "Box",
    "DEFAULT_BOX_IOU_THRESHOLDS",
    "DEFAULT_BOX_THRESHOLDS",
    "box_accuracy",
    "box_accuracy_grid",
    "box_iou",
    "boxes_mask",
    "connected_components",
    "energy_pointing_game",
    "localisation_error",
    "localisation_metrics",
    "max_box_accuracy",
    "max_iou",
    "official_metric",
    "pixel_f1",
    "pointing_game",
    "predicted_box",
    "resize_bilinear",
    "saliency_metric",
]
