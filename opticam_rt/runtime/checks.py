"""Checks at the runtime's edges: the images and targets a caller gives (the host Explainer and
the explainer-graph engine take the same ones), and computed maps, a non-finite one reported
with its likely cause."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np

from opticam_rt.errors import InputError, NumericalError


def check_images(images: Any, input_size: Sequence[int]) -> np.ndarray:
    """(N, 3, H, W) real pixels in [0, 1] at the bundle's ``input_size`` -> C-contiguous float32."""
    images = np.asarray(images)
    h, w = input_size
    if images.dtype.kind not in "fiub":  # complex, object, strings, dates: not pixels
        raise InputError(f"images must be real numbers (float pixels in [0, 1]), got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (3, h, w):
        raise InputError(f"images must have shape (N, 3, {h}, {w}), got {images.shape}")
    if images.shape[0] == 0:
        raise InputError(f"images: an empty batch (shape {images.shape}); give at least one image")
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1.0 + 1e-6:
        raise InputError(
            f"image pixels must be in [0, 1] (got {images.min():.3g}..{images.max():.3g}); divide 0..255 data by 255"
        )
    return np.ascontiguousarray(images, dtype=np.float32)


def check_targets(targets: Any, n: int, num_classes: int, top1: int | None = None) -> np.ndarray:
    """One class index per image (a single one is broadcast) -> (N,) int64.

    ``top1``: a value that stands for "the top-1 class" and is let through (the explainer
    graphs' -1); None admits only 0..num_classes-1.
    """
    arr = np.full(n, targets) if np.isscalar(targets) else np.asarray(targets)
    if arr.shape != (n,):
        raise InputError(f"targets must be one class index per image ({n}), got shape {arr.shape}")
    listed = targets if isinstance(targets, (list, tuple)) else [targets]
    if arr.dtype.kind not in "iuf" or any(isinstance(t, (bool, np.bool_)) for t in listed):
        # True is not class 1; "abc" and None are no class
        shown = ascii(arr[0] if n else targets)[:40]
        raise InputError(f"targets must be integer class indices, got {shown} (dtype {arr.dtype})")
    low = 0 if top1 is None else min(0, top1)
    for i, t in enumerate(arr):
        if not float(t).is_integer() or not low <= int(t) < num_classes:
            extra = "" if top1 is None else f" ({top1} = top-1)"
            raise InputError(
                f"target class {t} of image {i} is out of range: the model has classes 0..{num_classes - 1}{extra}"
            )
    return arr.astype(np.int64)


def check_finite_maps(maps: np.ndarray, method: str, options: Mapping[str, Any], verification: Any) -> None:
    """Raise NumericalError when ``maps`` (N, H, W) holds NaN or infinity, naming the likely cause.

    ``verification`` is the bundle manifest's verification record (None when not verified).
    The causes are tried in order: an option that is not a finite number (e.g. ``lr=nan``), a
    bundle whose parity check failed or did not finish at export, and otherwise non-finite model
    outputs (weights changed after loading, or a numerically unstable model).
    """
    bad = ~np.isfinite(np.asarray(maps).reshape(len(maps), -1)).all(axis=1)
    if not bad.any():
        return
    images = ", ".join(str(i) for i in np.flatnonzero(bad)[:8]) + (" ..." if bad.sum() > 8 else "")
    odd = [f"{k}={v!r}" for k, v in options.items() if isinstance(v, float) and not math.isfinite(v)]
    if odd:
        cause = f"option {', '.join(odd)} is not a finite number"
    elif isinstance(verification, Mapping) and verification.get("passed") is False:
        cause = "the bundle FAILED its parity check at export; re-export it (see its verification report)"
    elif isinstance(verification, Mapping) and "passed" not in verification:
        cause = "the bundle's parity check at export did not finish; re-export it"
    else:
        cause = "the model gave non-finite values (weights changed after loading, or a numerically unstable model)"
    raise NumericalError(f"{method} map of image(s) {images} is not finite (NaN or infinity): {cause}")
