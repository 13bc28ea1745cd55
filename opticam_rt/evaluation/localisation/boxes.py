"""Ground-truth boxes: checking and clipping them, their pixel mask, the IoU of two boxes.

Conventions (boxes, binarisation, components): see :mod:`opticam_rt.evaluation.localisation`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Union

import numpy as np

from opticam_rt.errors import InputError


Box = tuple[int, int, int, int]
Threshold = Union[float, Literal["mean"]]


def check_boxes(boxes: Sequence[Sequence[float]], height: int, width: int) -> list[Box]:
    """Clip boxes to the image and return them as int tuples; InputError if none or any is empty."""
    if boxes is None or len(boxes) == 0:
        raise InputError("localisation metrics need at least one ground-truth box for the image")
    out: list[Box] = []
    for b in boxes:
        if len(b) != 4:
            raise InputError(f"a box is (x0, y0, x1, y1), got {tuple(b)!r}")
        try:
            x0, y0, x1, y1 = (int(round(float(v))) for v in b)
        except (TypeError, ValueError) as exc:
            raise InputError(f"box coordinates must be numbers, got {tuple(b)!r}") from exc
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x1, width), min(y1, height)
        if cx1 <= cx0 or cy1 <= cy0:
            raise InputError(f"box {(x0, y0, x1, y1)} is empty or outside the {width} x {height} image "
                             "(boxes are x0, y0, x1, y1, inclusive-exclusive, at model resolution)")
        out.append((cx0, cy0, cx1, cy1))
    return out


def boxes_mask(boxes: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Union ``U`` of the boxes' pixels; (height, width) bool."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in check_boxes(boxes, height, width):
        mask[y0:y1, x0:x1] = True
    return mask


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two inclusive-exclusive boxes (areas in pixels); 0 if disjoint."""
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return float(inter / union) if union > 0 else 0.0
