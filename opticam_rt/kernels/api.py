"""Public entry points: check shapes, then route NumPy arrays to the CPU code and CuPy arrays to the GPU code."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.kernels import _validate as v
from opticam_rt.kernels.cache import OpticamCache

Array = Any  # numpy.ndarray or cupy.ndarray (cupy is never imported here)


def saliency_and_mask(features: Array, weights: Array, images: Array) -> tuple[Array, Array]:
    """Weighted channel sum, bilinear upsample, per-image min-max normalisation, mask.

    features (N, K, h, w), weights (N, K) (already normalised, e.g. softmax or Grad-CAM
    weights), images (N, C, H, W) -> saliency (N, H, W) in [0, 1), masked (N, C, H, W)
    where saliency = minmax(U_h @ sum_k w[:, k] A[:, k] @ U_w^T) and
    masked = images * saliency[:, None]. All outputs float32 on the inputs' device.
    """
    impl, xp = _backend(features, weights, images)
    features, weights, images = (_f32(xp, a) for a in (features, weights, images))
    n, k, *_ = v.check_features_images(features, images)
    v.check_channel_vector("weights", weights, n, k)
    return impl.saliency_and_mask(features, weights, images)


def opticam_forward(features: Array, u: Array, images: Array) -> tuple[Array, Array, OpticamCache]:
    """Opti-CAM forward: :func:`saliency_and_mask` with weights = softmax(u, axis=1).

    features (N, K, h, w), u (N, K) logits, images (N, C, H, W) ->
    saliency (N, H, W), masked (N, C, H, W), cache (for :func:`opticam_adjoint`).
    """
    impl, xp = _backend(features, u, images)
    features, u, images = (_f32(xp, a) for a in (features, u, images))
    n, k, *_ = v.check_features_images(features, images)
    v.check_channel_vector("u", u, n, k)
    return impl.opticam_forward(features, u, images)


def opticam_adjoint(grad_masked: Array, cache: OpticamCache) -> Array:
    """Gradient of an objective w.r.t. the logits u, given g = d objective / d masked.

    grad_masked (N, C, H, W) -> grad_u (N, K) float32. Chains the mask product, the
    min-max normalisation (argmin/argmax gradient split evenly over ties, as
    torch.amin/amax autograd), the upsample adjoint U_h^T @ G @ U_w, the channel sum
    and the softmax Jacobian.
    """
    if not isinstance(cache, OpticamCache):
        raise InputError(f"cache must be the OpticamCache returned by opticam_forward, got {type(cache).__name__}")
    impl, xp = _backend(grad_masked, cache.features)
    grad_masked = _f32(xp, grad_masked)
    v.check_grad_masked(grad_masked, cache.images.shape)
    return impl.opticam_adjoint(grad_masked, cache)


def scorecam_masked_copies(
    features: Array, images: Array, *, channels: slice | None = None, out: Array | None = None
) -> Array:
    """Score-CAM inputs: every image masked by each of its own normalised channels.

    features (N, K, h, w), images (N, C, H, W) -> (N * Kc, C, H, W) float32, where the
    channels taken are ``range(K)[channels]`` (all K by default) and Kc is their number.
    Row n * Kc + j is image n times minmax(upsample(A[n, k_j])), normalised per (n, k)
    with NORM_EPS. Pass ``channels=slice(k0, k0 + chunk)`` to stream through K in chunks
    and ``out`` (a C-contiguous float32 array of the result's shape) to reuse a buffer;
    working memory beyond ``out`` stays bounded whatever K is.
    """
    impl, xp = _backend(features, images, *(() if out is None else (out,)))
    features, images = _f32(xp, features), _f32(xp, images)
    _, k, *_ = v.check_features_images(features, images)
    if channels is None:
        channels = slice(None)
    if not isinstance(channels, slice):
        raise InputError(f"channels must be a slice or None, got {type(channels).__name__}")
    return impl.scorecam_masked_copies(features, images, range(k)[channels], out)


def _f32(xp: ModuleType, arr: Array) -> Array:
    # C-contiguous float32 once at the boundary, so the implementations can reshape freely
    # and the CUDA kernels can index raw pointers. No copy when already in that form.
    return xp.ascontiguousarray(xp.asarray(arr, dtype=xp.float32))


def _is_cupy(arr: Array) -> bool:
    # If cupy was never imported, no argument can be a cupy array: never import it here.
    cp = sys.modules.get("cupy")
    return cp is not None and isinstance(arr, cp.ndarray)


def _backend(*arrays: Array) -> tuple[ModuleType, ModuleType]:
    """(implementation module, array module) for the arrays; all must live on one side."""
    on_gpu = [_is_cupy(a) for a in arrays]
    if all(on_gpu):
        from opticam_rt.kernels import mask_cupy  # imports cupy; only reached with cupy arrays

        return mask_cupy, mask_cupy.cp
    if any(on_gpu):
        raise InputError("arguments mix CuPy and NumPy arrays; pass all of them on the same device")
    from opticam_rt.kernels import mask_numpy

    return mask_numpy, np
