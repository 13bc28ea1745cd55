"""ILSVRC localisation error (LE) and the official metric (OM): from each image's best IoU and
whether the class was right.

Conventions (boxes, binarisation, components): see :mod:`opticam_rt.evaluation.localisation`."""

from __future__ import annotations


import numpy as np

from opticam_rt.errors import InputError


def _ious_and_flags(max_ious: np.ndarray, correct_class: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    iou = np.asarray(max_ious, dtype=np.float64)
    if iou.ndim != 1 or np.any(~np.isfinite(iou)) or np.any(iou < 0) or np.any(iou > 1):
        raise InputError(f"max_ious must be a 1-D array of IoUs in [0, 1], got shape {iou.shape}")
    if correct_class is None:
        return iou, None
    ok = np.asarray(correct_class)
    if ok.shape != iou.shape or ok.dtype != bool:
        raise InputError(f"correct_class must be a boolean array of shape {iou.shape}, "
                         f"got {ok.dtype} {ok.shape}")
    return iou, ok


def localisation_error(max_ious: np.ndarray, iou_threshold: float | None = 0.5) -> np.ndarray:
    """Per-image localisation error LE in [0, 1], ignoring the class; (N,) float64.

    ``max_ious``: (N,) best IoU of the predicted box with the ground-truth boxes
    (:func:`max_iou`). ILSVRC localisation (Russakovsky et al., "ImageNet Large Scale Visual
    Recognition Challenge", IJCV 2015; here with the class taken as given, as in the GT-known
    localisation of WSOL papers): error 1 when IoU < ``iou_threshold`` (0.5).
    With ``iou_threshold=None``, the Opti-CAM paper's continuous variant (eq. (B.2), Table A.7):
    ``1 - max_B IoU(B, B_p)``. The metric is the mean (times 100 for %).
    """
    iou, _ = _ious_and_flags(max_ious)
    if iou_threshold is None:
        return 1.0 - iou
    return (iou < iou_threshold).astype(np.float64)


def official_metric(max_ious: np.ndarray, correct_class: np.ndarray, iou_threshold: float | None = 0.5) -> np.ndarray:
    """Per-image ILSVRC official localisation error OM in [0, 1]; (N,) float64.

    ILSVRC top-1 localisation error (Russakovsky et al., "ImageNet Large Scale Visual
    Recognition Challenge", IJCV 2015; the WSOL "Top-1 Loc" error): an image
    counts as an error when its predicted class is wrong (``correct_class[i]`` False) **or**
    the predicted box overlaps no ground-truth box with IoU >= ``iou_threshold`` (0.5). With
    ``iou_threshold=None``, the Opti-CAM paper's continuous variant (eq. (B.1), Table A.7):
    ``1 - max_B IoU(B, B_p) * 1[c_p = c]``. The metric is the mean (times 100 for %).
    """
    iou, ok = _ious_and_flags(max_ious, correct_class)
    assert ok is not None
    if iou_threshold is None:
        return 1.0 - iou * ok
    return (~(ok & (iou >= iou_threshold))).astype(np.float64)
