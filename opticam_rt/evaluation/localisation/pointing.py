"""The pointing games: does the map's peak fall in a box (SP), and how much of its energy (EP).

Conventions (boxes, binarisation, components): see :mod:`opticam_rt.evaluation.localisation`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.evaluation._checks import check_map
from opticam_rt.evaluation.localisation.boxes import boxes_mask, check_boxes


def pointing_game(saliency: np.ndarray, boxes: Sequence[Sequence[float]], tolerance: float = 15) -> bool:
    """Pointing game hit: the max-saliency pixel lies within ``tolerance`` px of a box.

    Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016 (extended in
    IJCV 2018), the "pointing game" experiment: a hit is counted when the maximum point lies
    on an annotated instance of the class, with a 15-pixel tolerance. As in TorchRay's implementation of that
    benchmark, "within" is ``(du^2 + dv^2) < tolerance^2`` (strict) between the max pixel and
    the nearest pixel of any box; ties for the max are broken in raster order (first pixel).

    The Opti-CAM paper's "standard pointing game" SP (eq. (B.6), ``1[p* in U]``) uses **no
    tolerance**: pass ``tolerance=0``, which counts a hit only when the pixel is inside a box.
    """
    s = check_map(saliency)
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0 pixels, got {tolerance}")
    gt = check_boxes(boxes, *s.shape)
    py, px = np.unravel_index(int(np.argmax(s)), s.shape)
    for x0, y0, x1, y1 in gt:
        # Distance along each axis to the nearest pixel of the box (0 when within its span).
        dx = max(x0 - px, 0, px - (x1 - 1))
        dy = max(y0 - py, 0, py - (y1 - 1))
        if (dx == 0 and dy == 0) or dx * dx + dy * dy < tolerance * tolerance:
            return True
    return False


def energy_pointing_game(saliency: np.ndarray, boxes: Sequence[Sequence[float]]) -> float:
    """Energy-based pointing game: the fraction of saliency energy inside the boxes, in [0, 1].

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR Workshops 2020, the energy-based pointing game of its localization
    evaluation:
    ``sum_{p in U} S_p / sum_p S_p``. Equal to the Opti-CAM paper's EP, which it defines as
    the precision (B.3). Negative values are clipped to 0 first; an all-zero map gives 0.
    """
    s = np.maximum(check_map(saliency), 0.0)
    u = boxes_mask(boxes, *s.shape)
    total = s.sum()
    return float(s[u].sum() / total) if total > 0 else 0.0
