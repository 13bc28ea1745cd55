"""Pixel F1 of the map against the union of the boxes, thresholded or soft.

Conventions (boxes, binarisation, components): see :mod:`opticam_rt.evaluation.localisation`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from opticam_rt.evaluation._checks import check_map
from opticam_rt.evaluation.localisation.boxes import boxes_mask
from opticam_rt.evaluation.localisation.components import threshold_value


def pixel_f1(saliency: np.ndarray, boxes: Sequence[Sequence[float]], threshold: float | None = 0.5) -> float:
    """Pixel-wise F1 = 2PR / (P + R) of the map against the box union ``U``, in [0, 1].

    With a float ``threshold`` (default 0.5), the map is binarised as ``M = {S > threshold *
    max(S)}`` and ``P = |M & U| / |M|``, ``R = |M & U| / |U|`` (standard pixel-wise F1, e.g.
    as in WSOL segmentation evaluation). With ``threshold=None`` the Opti-CAM paper's soft
    variant (eqs. (B.3), (B.4), used in its Table A.7) is computed on the map itself, values
    clipped to [0, 1]: ``P = sum_{p in U} S_p / sum_p S_p``, ``R = sum_{p in U} S_p / |U|``.
    F1 is 0 when P + R is 0.
    """
    s = check_map(saliency)
    u = boxes_mask(boxes, *s.shape)
    if threshold is None:
        m = np.clip(s, 0.0, 1.0)
    else:
        m = (s > threshold_value(s, threshold)).astype(np.float64)
    inside = m[u].sum()
    total = m.sum()
    p = inside / total if total > 0 else 0.0
    r = inside / u.sum()
    return float(2 * p * r / (p + r)) if p + r > 0 else 0.0
