"""Shape checks shared by the NumPy and CuPy paths; every failure is an InputError."""

from __future__ import annotations

from typing import Any

from opticam_rt.errors import InputError


def check_features_images(features: Any, images: Any) -> tuple[int, int, int, int, int, int, int]:
    """Check features (N, K, h, w) against images (N, C, H, W); return (N, K, h, w, C, H, W)."""
    _check_ndim("features", features, 4, "(N, K, h, w)")
    _check_ndim("images", images, 4, "(N, C, H, W)")
    n, k, h, w = features.shape
    n_img, c, hh, ww = images.shape
    if n != n_img:
        raise InputError(
            f"features and images disagree on the batch size: features {tuple(features.shape)} "
            f"vs images {tuple(images.shape)} (both need the same N)"
        )
    for name, shape in (("features", features.shape), ("images", images.shape)):
        if min(shape) < 1:
            raise InputError(f"{name} has an empty dimension: shape {tuple(shape)}")
    return n, k, h, w, c, hh, ww


def check_channel_vector(name: str, vec: Any, n: int, k: int) -> None:
    """Check that weights/logits ``vec`` are (N, K) for features of batch N and K channels."""
    _check_ndim(name, vec, 2, "(N, K)")
    if tuple(vec.shape) != (n, k):
        raise InputError(f"{name} must have shape (N, K) = ({n}, {k}) to match features, got {tuple(vec.shape)}")


def check_grad_masked(grad: Any, images_shape: tuple[int, ...]) -> None:
    """Check that grad_masked has the shape of the images the forward pass masked."""
    _check_ndim("grad_masked", grad, 4, "(N, C, H, W)")
    if tuple(grad.shape) != tuple(images_shape):
        raise InputError(
            f"grad_masked must have the masked images' shape {tuple(images_shape)}, got {tuple(grad.shape)}"
        )


def check_out(out: Any, shape: tuple[int, ...], dtype: Any) -> None:
    """Check a caller-supplied output buffer: exact shape, float32, C-contiguous."""
    if tuple(out.shape) != tuple(shape):
        raise InputError(f"out must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if out.dtype != dtype:
        raise InputError(f"out must be float32, got {out.dtype}")
    if not out.flags.c_contiguous:
        raise InputError("out must be C-contiguous")


def _check_ndim(name: str, arr: Any, ndim: int, layout: str) -> None:
    shape = getattr(arr, "shape", None)
    if shape is None or len(shape) != ndim:
        raise InputError(f"{name} must be {ndim}-D {layout}, got shape {None if shape is None else tuple(shape)}")
