"""CPU benchmarks of opticam_rt.kernels against the same work done in PyTorch.

Run: ``python -m pytest benchmarks/bench_kernels.py --benchmark-only -q``.
Both sides run single-threaded (torch.set_num_threads(1) here; export
OPENBLAS_NUM_THREADS=1 for NumPy's BLAS) because on small shared machines
multi-threaded timings swing by orders of magnitude with the load of other processes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from opticam_rt.constants import NORM_EPS
from opticam_rt.kernels import opticam_adjoint, opticam_forward, scorecam_masked_copies

K, h, w, H, W = 1280, 7, 7, 224, 224
SCORECAM_CHANNELS = 256  # a chunk of K, to keep one round short


@pytest.fixture(scope="module", autouse=True)
def single_thread_torch():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(n: int, k: int = K):
    rng = np.random.default_rng(0)
    feats = np.maximum(rng.standard_normal((n, k, h, w)), 0).astype(np.float32)
    u = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.random((n, 3, H, W)).astype(np.float32)
    g = rng.standard_normal((n, 3, H, W)).astype(np.float32)
    return feats, u, x, g


def kernel_step(feats, u, x, g):
    _, _, cache = opticam_forward(feats, u, x)
    return opticam_adjoint(g, cache)


def torch_step(feats, u, x, g):
    """The same forward + d<masked, g>/du in PyTorch autograd (inputs already tensors)."""
    ut = u.detach().requires_grad_(True)
    s = torch.einsum("nk,nkhw->nhw", torch.softmax(ut, dim=1), feats)[:, None]
    up = F.interpolate(s, size=(H, W), mode="bilinear", align_corners=False)
    mn = torch.amin(up, dim=(2, 3), keepdim=True)
    mx = torch.amax(up, dim=(2, 3), keepdim=True)
    masked = x * ((up - mn) / (mx - mn + NORM_EPS))
    return torch.autograd.grad((masked * g).sum(), ut)[0]


@pytest.mark.parametrize("impl", ["numpy-kernel", "torch-autograd"])
@pytest.mark.parametrize("n", [1, 8])
def test_opticam_forward_adjoint(benchmark, n, impl):
    benchmark.group = f"opticam fwd+adjoint N={n} K={K} {h}x{w}->{H}x{W}"
    arrays = _inputs(n)
    if impl == "numpy-kernel":
        fn, args = kernel_step, arrays
    else:
        fn, args = torch_step, tuple(torch.from_numpy(a) for a in arrays)
    out = benchmark(fn, *args)
    assert out.shape == (n, K)


def scorecam_numpy_loop(feats, x):
    """Plain Score-CAM: one channel at a time, NumPy resize (separable matrices) per channel."""
    n, k = feats.shape[:2]
    u_h = np.ascontiguousarray(_matrix(H, h))
    u_w_t = np.ascontiguousarray(_matrix(W, w).T)
    out = np.empty((n * k, 3, H, W), np.float32)
    for i in range(n):
        for j in range(k):
            up = u_h @ feats[i, j] @ u_w_t
            mn, mx = up.min(), up.max()
            out[i * k + j] = x[i] * ((up - mn) / (mx - mn + np.float32(NORM_EPS)))
    return out


def scorecam_torch_loop(feats, x):
    """Plain Score-CAM as usually written: F.interpolate one channel at a time."""
    n, k = feats.shape[:2]
    out = torch.empty((n * k, 3, H, W))
    for i in range(n):
        for j in range(k):
            up = F.interpolate(feats[i : i + 1, j : j + 1], size=(H, W), mode="bilinear", align_corners=False)
            mn, mx = up.amin(), up.amax()
            out[i * k + j] = x[i] * ((up[0] - mn) / (mx - mn + NORM_EPS))
    return out


def _matrix(out_size, in_size):
    # Built from F.interpolate impulse responses so the baseline does not reuse kernel code.
    eye = torch.eye(in_size)[:, None, :, None]
    return F.interpolate(eye, size=(out_size, 1), mode="bilinear", align_corners=False)[:, 0, :, 0].T.numpy()


@pytest.mark.parametrize("impl", ["numpy-kernel", "numpy-kernel-out", "numpy-loop", "torch-loop"])
def test_scorecam_masks(benchmark, impl):
    # All variants write N*K*3*H*W floats (154 MB here), which bounds them on CPU;
    # "numpy-kernel-out" reuses one output buffer (the chunked-streaming use of `out=`),
    # the others allocate theirs on every call, as a one-shot caller would.
    benchmark.group = f"scorecam masks N=1 K={SCORECAM_CHANNELS} {h}x{w}->{H}x{W}"
    feats, _, x, _ = _inputs(1, SCORECAM_CHANNELS)
    if impl == "numpy-kernel":
        out = benchmark(scorecam_masked_copies, feats, x)
    elif impl == "numpy-kernel-out":
        buf = np.empty((SCORECAM_CHANNELS, 3, H, W), np.float32)
        out = benchmark(scorecam_masked_copies, feats, x, out=buf)
    elif impl == "numpy-loop":
        out = benchmark(scorecam_numpy_loop, feats, x)
    else:
        out = benchmark(scorecam_torch_loop, torch.from_numpy(feats), torch.from_numpy(x))
    assert tuple(out.shape) == (SCORECAM_CHANNELS, 3, H, W)
