"""NumPy (CPU) implementation of the upsample-normalise-mask step and its adjoint."""

from __future__ import annotations

import numpy as np

from opticam_rt.constants import NORM_EPS
from opticam_rt.kernels._validate import check_out
from opticam_rt.kernels.bilinear import cached_bilinear_matrix
from opticam_rt.kernels.cache import OpticamCache

_F32 = np.float32

#: Score-CAM processes channels in blocks of at most this many upsampled pixels
#: (N * block * H * W): temporaries stay ~2 MiB whatever K is, and the maps stay in L2
#: while they are normalised and multiplied into the images (measured fastest).
SCORECAM_BLOCK_PIXELS = 1 << 19


def softmax(u: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of u (N, K), float32, max-shifted for stability."""
    z = u - u.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def upsample(maps: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear-resize maps (..., h, w) to (..., out_h, out_w) as U_h @ maps @ U_w^T."""
    *lead, h, w = maps.shape
    u_h = cached_bilinear_matrix(out_h, h)
    u_w = cached_bilinear_matrix(out_w, w)
    # Width first as one large GEMM over all rows (a free reshape), then the height
    # step as a batched (out_h, h) @ (h, out_w) product.
    t = (np.ascontiguousarray(maps).reshape(-1, w) @ u_w.T).reshape(-1, h, out_w)
    return np.matmul(u_h, t).reshape(*lead, out_h, out_w)


def _minmax(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-map min and max over the last two axes of maps (..., H, W)."""
    flat = maps.reshape(*maps.shape[:-2], -1)
    return flat.min(axis=-1), flat.max(axis=-1)


def _forward(features: np.ndarray, weights: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, ...]:
    """(saliency, masked, upsampled, smin, smax) for weights (N, K) already normalised."""
    n, k, h, w = features.shape
    out_h, out_w = images.shape[-2:]
    # S[n] = sum_k w[n,k] A[n,k]: one batched (1, K) @ (K, h*w) product per image.
    s = np.matmul(weights[:, None, :], features.reshape(n, k, h * w)).reshape(n, h, w)
    s_up = upsample(s, out_h, out_w)
    smin, smax = _minmax(s_up)
    denom = (smax - smin + _F32(NORM_EPS))[:, None, None]
    sal = s_up - smin[:, None, None]
    sal /= denom  # division (not a reciprocal multiply), as in the reference graph
    masked = images * sal[:, None]
    return sal, masked, s_up, smin, smax


def saliency_and_mask(features: np.ndarray, weights: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """See :func:`opticam_rt.kernels.saliency_and_mask`; arrays are float32 and checked."""
    sal, masked, *_ = _forward(features, weights, images)
    return sal, masked


def opticam_forward(
    features: np.ndarray, u: np.ndarray, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray, OpticamCache]:
    """See :func:`opticam_rt.kernels.opticam_forward`; arrays are float32 and checked."""
    weights = softmax(u)
    sal, masked, s_up, smin, smax = _forward(features, weights, images)
    cache = OpticamCache(features, weights, images, s_up, sal, smin, smax)
    return sal, masked, cache


def opticam_adjoint(grad_masked: np.ndarray, cache: OpticamCache) -> np.ndarray:
    """See :func:`opticam_rt.kernels.opticam_adjoint`; arrays are float32 and checked."""
    a, w, x = cache.features, cache.weights, cache.images
    s_up, sal, smin, smax = cache.upsampled, cache.saliency, cache.smin, cache.smax
    n, k, h, wd = a.shape
    out_h, out_w = s_up.shape[-2:]
    pix = out_h * out_w

    # Through the mask: dL/dSn = sum_c g * x (einsum: no (N, C, H, W) temporary).
    g_sn = np.einsum("nchw,nchw->nhw", grad_masked, x)

    # Through Sn = (S - m) / D, D = M - m + eps:
    #   dL/dS = G / D (pointwise) + dL/dm * [argmin] + dL/dM * [argmax], with
    #   dL/dM = -sum(G Sn) / D and dL/dm = (sum(G Sn) - sum(G)) / D,
    # the argmin/argmax gradient split evenly over tied pixels (torch.amin/amax semantics).
    # The sums reduce a contiguous axis, so NumPy sums pairwise (error ~log2(H*W) ulp).
    g_flat = g_sn.reshape(n, pix)
    sum_g = g_flat.sum(axis=1).astype(np.float64)
    sum_gsn = (g_flat * sal.reshape(n, pix)).sum(axis=1).astype(np.float64)
    denom = smax - smin + _F32(NORM_EPS)  # the float32 D the forward divided by
    flat = s_up.reshape(n, pix)
    is_min = flat == smin[:, None]
    is_max = flat == smax[:, None]
    coef_min = ((sum_gsn - sum_g) / denom / is_min.sum(axis=1)).astype(_F32)
    coef_max = (-sum_gsn / denom / is_max.sum(axis=1)).astype(_F32)
    g_s = g_flat / denom[:, None]
    np.add(g_s, coef_min[:, None], out=g_s, where=is_min)
    np.add(g_s, coef_max[:, None], out=g_s, where=is_max)

    # Upsample adjoint: U_h^T @ G @ U_w -> (N, h, w).
    u_h = cached_bilinear_matrix(out_h, h)
    u_w = cached_bilinear_matrix(out_w, wd)
    g_small = np.matmul(u_h.T, g_s.reshape(n, out_h, out_w)) @ u_w

    # Channel sum adjoint: dL/dw[n,k] = <A[n,k], dL/dS[n]> as one batched product.
    g_w = np.matmul(a.reshape(n, k, h * wd), g_small.reshape(n, h * wd, 1))[:, :, 0]

    # Softmax Jacobian: dL/du = w * (dL/dw - <w, dL/dw>), in float64 because the
    # difference cancels when the channel gradients are similar.
    w64 = w.astype(np.float64)
    gw64 = g_w.astype(np.float64)
    return (w64 * (gw64 - (w64 * gw64).sum(axis=1, keepdims=True))).astype(_F32)


def scorecam_masked_copies(
    features: np.ndarray, images: np.ndarray, channels: range, out: np.ndarray | None
) -> np.ndarray:
    """See :func:`opticam_rt.kernels.scorecam_masked_copies`; ``channels`` is a resolved range."""
    n = features.shape[0]
    c, out_h, out_w = images.shape[1:]
    kc = len(channels)
    shape = (n * kc, c, out_h, out_w)
    if out is None:
        out = np.empty(shape, dtype=_F32)
    else:
        check_out(out, shape, np.dtype(_F32))
    out5 = out.reshape(n, kc, c, out_h, out_w)  # a view: out is C-contiguous
    block = max(1, SCORECAM_BLOCK_PIXELS // (n * out_h * out_w))
    eps = _F32(NORM_EPS)
    for b0 in range(0, kc, block):
        sub = channels[b0 : b0 + block]
        # Basic slicing (no copy) for the usual step-1 ranges; gather for the others.
        sel = features[:, sub.start : sub.stop] if sub.step == 1 else features[:, np.asarray(sub)]
        up = upsample(sel, out_h, out_w)  # (N, B, H, W)
        mn, mx = _minmax(up)
        up -= mn[..., None, None]
        up /= (mx - mn + eps)[..., None, None]
        np.multiply(images[:, None], up[:, :, None], out=out5[:, b0 : b0 + len(sub)])
    return out
