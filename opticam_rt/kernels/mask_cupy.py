"""CuPy (GPU) implementation of the upsample-normalise-mask step and its adjoint.

Imported only when a CuPy array reaches :mod:`opticam_rt.kernels.api`; importing this
module imports cupy.
"""

from __future__ import annotations

from functools import lru_cache

import cupy as cp
import numpy as np

from opticam_rt.constants import NORM_EPS
from opticam_rt.kernels._validate import check_out
from opticam_rt.kernels.bilinear import cached_bilinear_matrix
from opticam_rt.kernels.cache import OpticamCache
from opticam_rt.kernels.cuda_source import BLOCK, CUDA_SOURCE

_F32 = np.float32
_I64 = np.int64
#: Cap on grid size for the grid-stride kernels: enough blocks to fill any current GPU.
_MAX_GRID = 8192


@lru_cache(maxsize=None)
def _module(device_id: int) -> cp.RawModule:
    # One module for all kernels, compiled on first use per device (CuPy also caches the
    # binary on disk). device_id is only the cache key.
    del device_id
    return cp.RawModule(code=CUDA_SOURCE, options=("-std=c++11",))


@lru_cache(maxsize=None)
def _kernel(name: str, device_id: int) -> cp.RawKernel:
    return _module(device_id).get_function(name)


def _launch(name: str, grid: int, args: tuple) -> None:
    """Run kernel ``name`` on the current device and stream with BLOCK threads per block."""
    _kernel(name, cp.cuda.Device().id)((int(grid),), (BLOCK,), args)


def _grid(total: int) -> int:
    return max(1, min((total + BLOCK - 1) // BLOCK, _MAX_GRID))


@lru_cache(maxsize=64)
def _matrix(out_size: int, in_size: int, device_id: int) -> cp.ndarray:
    del device_id
    return cp.asarray(cached_bilinear_matrix(out_size, in_size))


@lru_cache(maxsize=64)
def _taps(out_size: int, in_size: int, device_id: int) -> tuple[cp.ndarray, cp.ndarray]:
    """The <= 2 non-zeros of each bilinear_matrix row: idx int32 (2, out), wt float32 (2, out)."""
    del device_id
    mat = cached_bilinear_matrix(out_size, in_size)
    nz = mat != 0
    first = nz.argmax(axis=1)
    last = in_size - 1 - nz[:, ::-1].argmax(axis=1)
    rows = np.arange(out_size)
    w0 = mat[rows, first]
    w1 = np.where(last != first, mat[rows, last], 0.0).astype(_F32)
    idx = np.stack([first, last]).astype(np.int32)
    return cp.asarray(idx), cp.asarray(np.stack([w0, w1]).astype(_F32))


def _mats(out_h: int, out_w: int, h: int, w: int) -> tuple[cp.ndarray, cp.ndarray]:
    dev = cp.cuda.Device().id
    return _matrix(out_h, h, dev), _matrix(out_w, w, dev)


def _minmax(maps: cp.ndarray) -> tuple[cp.ndarray, cp.ndarray]:
    """Per-map min and max of maps (M, H, W) -> (M,), (M,)."""
    m = maps.shape[0]
    mn = cp.empty(m, dtype=_F32)
    mx = cp.empty(m, dtype=_F32)
    _launch("map_minmax", m, (maps, _I64(maps[0].size), mn, mx))
    return mn, mx


def softmax(u: cp.ndarray) -> cp.ndarray:
    """Softmax over axis 1 of u (N, K), float32, max-shifted for stability."""
    z = cp.exp(u - u.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _forward(features: cp.ndarray, weights: cp.ndarray, images: cp.ndarray) -> tuple[cp.ndarray, ...]:
    """(saliency, masked, upsampled, smin, smax) for weights (N, K) already normalised."""
    n, k, h, w = features.shape
    c, out_h, out_w = images.shape[1:]
    u_h, u_w = _mats(out_h, out_w, h, w)
    s = cp.matmul(weights[:, None, :], features.reshape(n, k, h * w)).reshape(n, h, w)
    # Width first, then height: the same product order as the NumPy path.
    t = (s.reshape(n * h, w) @ u_w.T).reshape(n, h, out_w)
    s_up = cp.ascontiguousarray(cp.matmul(u_h, t))
    smin, smax = _minmax(s_up)
    sal = cp.empty((n, out_h, out_w), dtype=_F32)
    masked = cp.empty_like(images)
    hw = out_h * out_w
    _launch(
        "normalise_mask",
        _grid(n * c * hw),
        (s_up, smin, smax, images, _I64(n), _I64(c), _I64(hw), _F32(NORM_EPS), sal, masked),
    )
    return sal, masked, s_up, smin, smax


def saliency_and_mask(
    features: cp.ndarray, weights: cp.ndarray, images: cp.ndarray
) -> tuple[cp.ndarray, cp.ndarray]:
    """See :func:`opticam_rt.kernels.saliency_and_mask`; arrays are float32 and checked."""
    sal, masked, *_ = _forward(features, weights, images)
    return sal, masked


def opticam_forward(
    features: cp.ndarray, u: cp.ndarray, images: cp.ndarray
) -> tuple[cp.ndarray, cp.ndarray, OpticamCache]:
    """See :func:`opticam_rt.kernels.opticam_forward`; arrays are float32 and checked."""
    weights = softmax(u)
    sal, masked, s_up, smin, smax = _forward(features, weights, images)
    return sal, masked, OpticamCache(features, weights, images, s_up, sal, smin, smax)


def opticam_adjoint(grad_masked: cp.ndarray, cache: OpticamCache) -> cp.ndarray:
    """See :func:`opticam_rt.kernels.opticam_adjoint`; arrays are float32 and checked."""
    a, w, x = cache.features, cache.weights, cache.images
    n, k, h, wd = a.shape
    c, out_h, out_w = x.shape[1:]
    hw = out_h * out_w
    g_sn = cp.empty((n, out_h, out_w), dtype=_F32)
    stats = cp.empty((n, 4), dtype=np.float64)
    _launch(
        "adjoint_reduce",
        n,
        (grad_masked, x, cache.upsampled, cache.saliency, cache.smin, cache.smax, _I64(c), _I64(hw), g_sn, stats),
    )
    g_s = cp.empty_like(g_sn)
    _launch(
        "adjoint_scatter",
        _grid(n * hw),
        (g_sn, cache.upsampled, cache.smin, cache.smax, stats, _I64(n), _I64(hw), _F32(NORM_EPS), g_s),
    )
    u_h, u_w = _mats(out_h, out_w, h, wd)
    g_small = cp.matmul(cp.matmul(u_h.T, g_s), u_w)  # (N, h, w)
    g_w = cp.matmul(a.reshape(n, k, h * wd), g_small.reshape(n, h * wd, 1))[:, :, 0]
    w64, gw64 = w.astype(np.float64), g_w.astype(np.float64)
    return (w64 * (gw64 - (w64 * gw64).sum(axis=1, keepdims=True))).astype(_F32)


def scorecam_masked_copies(
    features: cp.ndarray, images: cp.ndarray, channels: range, out: cp.ndarray | None
) -> cp.ndarray:
    """See :func:`opticam_rt.kernels.scorecam_masked_copies`; ``channels`` is a resolved range."""
    n, k, h, w = features.shape
    c, out_h, out_w = images.shape[1:]
    kc = len(channels)
    shape = (n * kc, c, out_h, out_w)
    if out is None:
        out = cp.empty(shape, dtype=_F32)
    else:
        check_out(out, shape, np.dtype(_F32))
    if kc == 0:
        return out
    dev = cp.cuda.Device().id
    ty, wy = _taps(out_h, h, dev)
    tx, wx = _taps(out_w, w, dev)
    sizes = (_I64(k), _I64(h), _I64(w), _I64(kc), _I64(channels.start), _I64(channels.step))
    mn = cp.empty(n * kc, dtype=_F32)
    mx = cp.empty(n * kc, dtype=_F32)
    # Two passes over recomputed bilinear values: the upsampled maps are never stored.
    _launch("scorecam_minmax", n * kc, (features, *sizes, _I64(out_h), _I64(out_w), ty, wy, tx, wx, mn, mx))
    _launch(
        "scorecam_mask",
        _grid(out.size),
        (features, images, _I64(n), *sizes, _I64(c), _I64(out_h), _I64(out_w), ty, wy, tx, wx, mn, mx,
         _F32(NORM_EPS), out),
    )
    return out
