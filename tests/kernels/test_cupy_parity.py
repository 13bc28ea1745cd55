"""CuPy kernels against the NumPy path on a real GPU (skipped without cupy or a device)."""

from __future__ import annotations

import numpy as np
import pytest

from opticam_rt.errors import InputError
from opticam_rt.kernels import opticam_adjoint, opticam_forward, saliency_and_mask, scorecam_masked_copies

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cp():
    cupy = pytest.importorskip("cupy")
    if not cupy.is_available():
        pytest.skip("cupy is installed but no CUDA device is available")
    return cupy


def _inputs(seed, n, k, h, w, big_h, big_w, c=3):
    rng = np.random.default_rng(seed)
    feats = np.maximum(rng.standard_normal((n, k, h, w)), 0).astype(np.float32)
    feats[:, :, 0, 0] += 3.0  # tied clamp-zone max; ReLU zeros give tied minima
    u = rng.standard_normal((n, k)).astype(np.float32)
    x = rng.random((n, c, big_h, big_w)).astype(np.float32)
    g = rng.standard_normal((n, c, big_h, big_w)).astype(np.float32)
    return feats, u, x, g


SHAPES = [(1, 8, 5, 7, 40, 56), (3, 16, 7, 7, 225, 225), (2, 1280, 7, 7, 224, 224)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_opticam_cupy_matches_numpy(cp, shape, assert_close):
    feats, u, x, g = _inputs(0, *shape)
    sal, masked, cache = opticam_forward(cp.asarray(feats), cp.asarray(u), cp.asarray(x))
    grad_u = opticam_adjoint(cp.asarray(g), cache)
    assert all(isinstance(a, cp.ndarray) for a in (sal, masked, grad_u))
    r_sal, r_masked, r_cache = opticam_forward(feats, u, x)
    assert_close(sal.get(), r_sal, what="saliency")
    assert_close(masked.get(), r_masked, what="masked")
    assert_close(grad_u.get(), opticam_adjoint(g, r_cache), what="grad_u")
    w = cache.weights
    s2, _ = saliency_and_mask(cp.asarray(feats), w, cp.asarray(x))
    assert_close(s2.get(), r_sal, what="saliency_and_mask")


@pytest.mark.parametrize("channels", [None, slice(100, 356), slice(None, None, -7)])
def test_scorecam_cupy_matches_numpy(cp, channels, assert_close):
    feats, _, x, _ = _inputs(1, 2, 1280, 7, 7, 224, 224)
    got = scorecam_masked_copies(cp.asarray(feats), cp.asarray(x), channels=slice(0, 64) if channels is None else channels)
    ref = scorecam_masked_copies(feats, x, channels=slice(0, 64) if channels is None else channels)
    assert_close(got.get(), ref, what="scorecam")


def test_scorecam_cupy_out_buffer(cp, assert_close):
    feats, _, x, _ = _inputs(2, 1, 10, 5, 7, 40, 56)
    buf = cp.empty((4, 3, 40, 56), dtype=cp.float32)
    out = scorecam_masked_copies(cp.asarray(feats), cp.asarray(x), channels=slice(2, 6), out=buf)
    assert out is buf
    assert_close(buf.get(), scorecam_masked_copies(feats, x, channels=slice(2, 6)), what="out")


def test_mixed_devices_are_rejected(cp):
    feats, u, x, _ = _inputs(3, 1, 4, 5, 7, 40, 56)
    with pytest.raises(InputError, match="mix CuPy and NumPy"):
        opticam_forward(cp.asarray(feats), u, x)
