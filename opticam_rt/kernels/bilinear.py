"""Bilinear (align_corners=False / half-pixel) resampling as a dense matrix."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from opticam_rt.errors import InputError


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Return U (out_size, in_size) float32 with ``U @ v`` == 1-D bilinear resize of ``v``.

    Matches ``F.interpolate(mode="bilinear", align_corners=False)`` given ``size=`` (and
    ONNX ``Resize`` with ``coordinate_transformation_mode="half_pixel"``, linear mode,
    no antialias) along one axis, so a 2-D resize of S (h, w) to (H, W) is
    ``bilinear_matrix(H, h) @ S @ bilinear_matrix(W, w).T``.

    Each row has at most two non-zeros summing to 1. At the lower edge the source
    coordinate is clamped to 0; at the upper edge both taps hit the last input and are
    merged into one weight of exactly 1.0, so edge pixels copy the input exactly.
    The result is a fresh array (the cached original is never handed out).
    """
    return _bilinear_matrix_cached(_check_size("out_size", out_size), _check_size("in_size", in_size)).copy()


@lru_cache(maxsize=64)
def _bilinear_matrix_cached(out_size: int, in_size: int) -> np.ndarray:
    # Computed in float64 then rounded once, so weights are the correctly rounded
    # float32 values (PyTorch computes them in float32; difference is < 1e-7).
    dst = np.arange(out_size, dtype=np.float64)
    src = (dst + 0.5) * (in_size / out_size) - 0.5
    src = np.maximum(src, 0.0)  # PyTorch clamps negative source coordinates to 0
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam = np.clip(src - i0, 0.0, 1.0)
    i1 = np.minimum(i0 + 1, in_size - 1)
    mat = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.arange(out_size)
    # np.add.at so the two taps accumulate when i0 == i1 (upper edge) instead of overwriting.
    np.add.at(mat, (rows, i0), 1.0 - lam)
    np.add.at(mat, (rows, i1), lam)
    out = mat.astype(np.float32)
    out.setflags(write=False)
    return out


def cached_bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Read-only shared copy of :func:`bilinear_matrix` for internal hot paths."""
    return _bilinear_matrix_cached(_check_size("out_size", out_size), _check_size("in_size", in_size))


def _check_size(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
