"""NumPy kernels against an independent float64 PyTorch reference (F.interpolate + autograd)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from opticam_rt.constants import NORM_EPS
from opticam_rt.kernels import (
    bilinear_matrix,
    opticam_adjoint,
    opticam_forward,
    saliency_and_mask,
    scorecam_masked_copies,
)


# --- independent reference: plain PyTorch ops, float64, autograd for the adjoint -------


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def ref_minmax_norm(up: torch.Tensor) -> torch.Tensor:
    """up (N, 1, H, W) -> per-image min-max normalised map (amin/amax: ties share the grad)."""
    mn = torch.amin(up, dim=(2, 3), keepdim=True)
    mx = torch.amax(up, dim=(2, 3), keepdim=True)
    return (up - mn) / (mx - mn + NORM_EPS)


def interpolate(s: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(s, size=size, mode="bilinear", align_corners=False)


def ref_opticam(features, u, images, grad_masked, upsample=interpolate):
    """(saliency (N,H,W), masked (N,C,H,W), grad_u (N,K)) by PyTorch autograd."""
    a, x, g = _t(features), _t(images), _t(grad_masked)
    ut = _t(u).requires_grad_(True)
    w = torch.softmax(ut, dim=1)
    s = (w[:, :, None, None] * a).sum(dim=1, keepdim=True)
    up = upsample(s, tuple(x.shape[-2:]))
    sal = ref_minmax_norm(up)
    masked = x * sal
    (grad_u,) = torch.autograd.grad((masked * g).sum(), ut)
    return sal[:, 0].detach().numpy(), masked.detach().numpy(), grad_u.numpy()


def ref_scorecam(features, images):
    """Per-channel loop: row n*K + k = images[n] * minmax(upsample(features[n, k]))."""
    a, x = _t(features), _t(images)
    n, k = a.shape[:2]
    rows = []
    for i in range(n):
        for j in range(k):
            up = F.interpolate(a[i : i + 1, j : j + 1], size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
            rows.append((x[i : i + 1] * ref_minmax_norm(up))[0])
    return torch.stack(rows).numpy()


# --- inputs ------------------------------------------------------------------------------


def random_inputs(seed: int, n: int, k: int, h: int, w: int, big_h: int, big_w: int, c: int = 3):
    """ReLU-like features with an interior bump, so the extremes of the upsampled map are
    away from the bottom/right border (see test_ties_* for the border cases)."""
    rng = np.random.default_rng(seed)
    feats = np.maximum(rng.standard_normal((n, k, h, w)), 0.0)
    feats[:, :, h // 2, w // 2] += 2.0  # unique interior max
    u = rng.standard_normal((n, k))
    images = rng.random((n, c, big_h, big_w))
    grad = rng.standard_normal((n, c, big_h, big_w))
    return tuple(a.astype(np.float32) for a in (feats, u, images, grad))


CASES = [
    # (n, k, h, w, H, W): batch 1 and 3, non-square, sizes that do not divide.
    (1, 8, 5, 7, 40, 56),
    (3, 16, 5, 7, 40, 56),
    (3, 16, 7, 7, 225, 225),
    (1, 32, 5, 13, 13, 5),  # H < w: a downsampling axis
    (3, 12, 7, 7, 224, 224),
    (2, 1280, 7, 7, 224, 224),  # realistic width
]


@pytest.mark.parametrize("shape", CASES, ids=lambda s: "x".join(map(str, s)))
def test_opticam_forward_and_adjoint_match_torch(shape, assert_close):
    feats, u, images, grad = random_inputs(sum(shape), *shape)
    sal, masked, cache = opticam_forward(feats, u, images)
    grad_u = opticam_adjoint(grad, cache)
    r_sal, r_masked, r_grad = ref_opticam(feats, u, images, grad)
    assert sal.dtype == masked.dtype == grad_u.dtype == np.float32
    assert_close(sal, r_sal, what="saliency")
    assert_close(masked, r_masked, what="masked")
    assert_close(grad_u, r_grad, what="grad_u")


def test_saliency_and_mask_takes_weights_directly(assert_close):
    feats, u, images, grad = random_inputs(7, 3, 16, 5, 7, 40, 56)
    rng = np.random.default_rng(1)
    weights = rng.standard_normal((3, 16)).astype(np.float32)  # Grad-CAM-style, not a softmax
    sal, masked = saliency_and_mask(feats, weights, images)
    s = (_t(weights)[:, :, None, None] * _t(feats)).sum(1, keepdim=True)
    r_sal = ref_minmax_norm(F.interpolate(s, size=(40, 56), mode="bilinear", align_corners=False))
    assert_close(sal, r_sal[:, 0].numpy(), what="saliency")
    assert_close(masked, (_t(images) * r_sal).numpy(), what="masked")


# --- ties: the argmin / argmax gradient must be split evenly, as torch.amin/amax do ---------


def impulse_upsample(s: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize as U_h @ s @ U_w^T, U built from F.interpolate impulse responses.

    Same values as F.interpolate, but where both taps of a bottom/right border pixel hit
    the last input F.interpolate computes x*l0 + x*l1, which rounds and breaks exact ties;
    here that row of U is exactly one-hot, so mathematically equal pixels stay equal.
    """

    def mat(out_size: int, in_size: int) -> torch.Tensor:
        eye = torch.eye(in_size, dtype=torch.float64)[:, None, :, None]
        return F.interpolate(eye, size=(out_size, 1), mode="bilinear", align_corners=False)[:, 0, :, 0].T

    return mat(size[0], s.shape[-2]) @ s @ mat(size[1], s.shape[-1]).T


def tied_inputs(seed: int, n: int, k: int, h: int, w: int):
    """Features constant over regions: zero on a block (ReLU-dead, so the minimum 0 is
    shared by every pixel inside it) and large values at border source pixels, whose
    clamped border zones copy them exactly, so the maximum is shared by blocks of pixels."""
    rng = np.random.default_rng(seed)
    feats = rng.random((n, k, h, w)) + 0.5
    feats[:, :, h - 3 :, :3] = 0.0  # min region, bottom-left
    feats[0, :, 0, 0] = 3.0  # image 0: max in the top-left clamp zone
    if n > 1:
        feats[1, :, h - 1, w - 1] = 3.0  # image 1: max in the bottom-right clamp zone
    if n > 2:
        feats[2, :, 0, 0] = feats[2, :, 0, w - 1] = 3.0  # image 2: two separate tied zones
    return feats.astype(np.float32)


def _tie_case(n: int, h: int, w: int, big_h: int, big_w: int):
    feats = tied_inputs(3, n, 6, h, w)
    rng = np.random.default_rng(4)
    u = rng.standard_normal((n, 6)).astype(np.float32)
    images = rng.random((n, 3, big_h, big_w)).astype(np.float32)
    grad = rng.standard_normal((n, 3, big_h, big_w)).astype(np.float32)
    return feats, u, images, grad


TIE_SIZES = [(5, 7, 40, 56), (7, 7, 224, 224), (7, 7, 225, 225)]


@pytest.mark.parametrize("sizes", TIE_SIZES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("n", [1, 3])
def test_ties_at_min_and_max_split_evenly(sizes, n, assert_close):
    feats, u, images, grad = _tie_case(n, *sizes)
    sal, masked, cache = opticam_forward(feats, u, images)
    grad_u = opticam_adjoint(grad, cache)
    r_sal, r_masked, r_grad = ref_opticam(feats, u, images, grad, upsample=impulse_upsample)

    # The inputs really do tie, and on the same pixels as in the reference.
    for i in range(n):
        n_min = int((cache.upsampled[i] == cache.smin[i]).sum())
        n_max = int((cache.upsampled[i] == cache.smax[i]).sum())
        assert n_min > 1 and n_max > 1
        assert (n_min, n_max) == (int((r_sal[i] == 0).sum()), int((r_sal[i] == r_sal[i].max()).sum()))
    assert_close(sal, r_sal, what="saliency")
    assert_close(masked, r_masked, what="masked")
    assert_close(grad_u, r_grad, what="grad_u")


@pytest.mark.parametrize("sizes", TIE_SIZES, ids=lambda s: "x".join(map(str, s)))
def test_top_left_ties_match_plain_interpolate(sizes, assert_close):
    # Zero-region minimum and top-left clamp-zone maximum tie exactly in F.interpolate
    # too (weights 1 and 0), so the plain reference must agree as well.
    feats, u, images, grad = _tie_case(1, *sizes)
    _, _, cache = opticam_forward(feats, u, images)
    assert_close(opticam_adjoint(grad, cache), ref_opticam(feats, u, images, grad)[2], what="grad_u")


def test_constant_map_normalises_to_zero():
    feats = np.ones((2, 4, 1, 1), np.float32)  # 1x1 maps: every upsampled pixel is exact
    images = np.random.default_rng(0).random((2, 3, 9, 11)).astype(np.float32)
    sal, masked, cache = opticam_forward(feats, np.zeros((2, 4), np.float32), images)
    assert not sal.any() and not masked.any()
    assert np.isfinite(opticam_adjoint(np.ones_like(images), cache)).all()


# --- Score-CAM masked copies ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 5, 5, 7, 40, 56), (3, 4, 7, 7, 225, 225)], ids=["n1", "n3"])
def test_scorecam_masked_copies_match_per_channel_loop(shape, assert_close):
    feats, _, images, _ = random_inputs(11, *shape)
    n, k = shape[:2]
    ref = ref_scorecam(feats, images)
    got = scorecam_masked_copies(feats, images)
    assert got.shape == (n * k, 3, shape[4], shape[5]) and got.dtype == np.float32
    assert_close(got, ref, what="scorecam")


def test_scorecam_channel_chunks_and_out_buffer(assert_close):
    feats, _, images, _ = random_inputs(12, 2, 10, 5, 7, 40, 56)
    ref = ref_scorecam(feats, images).reshape(2, 10, 3, 40, 56)
    buf = np.empty((2 * 4, 3, 40, 56), np.float32)
    for k0 in (0, 4, 8):
        out = scorecam_masked_copies(feats, images, channels=slice(k0, k0 + 4), out=buf[: 2 * min(4, 10 - k0)])
        assert np.shares_memory(out, buf)
        assert_close(out.reshape(2, -1, 3, 40, 56), ref[:, k0 : k0 + 4], what=f"chunk {k0}")
    strided = scorecam_masked_copies(feats, images, channels=slice(None, None, -3))
    assert_close(strided.reshape(2, -1, 3, 40, 56), ref[:, ::-3], what="strided")
    assert scorecam_masked_copies(feats, images, channels=slice(5, 5)).shape == (0, 3, 40, 56)


def test_scorecam_blocks_do_not_change_results(monkeypatch, assert_close):
    from opticam_rt.kernels import mask_numpy

    feats, _, images, _ = random_inputs(13, 2, 9, 5, 7, 40, 56)
    full = scorecam_masked_copies(feats, images)
    monkeypatch.setattr(mask_numpy, "SCORECAM_BLOCK_PIXELS", 1)  # one channel per block
    assert_close(scorecam_masked_copies(feats, images), full, rtol=0.0, what="block size")


# --- bilinear_matrix ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "h,w,big_h,big_w",
    [(7, 7, 224, 224), (7, 7, 225, 225), (5, 5, 13, 13), (5, 7, 40, 56), (7, 5, 225, 13), (10, 9, 3, 4), (1, 1, 5, 6)],
)
def test_bilinear_matrix_matches_interpolate(h, w, big_h, big_w, tol):
    u_h, u_w = bilinear_matrix(big_h, h), bilinear_matrix(big_w, w)
    assert u_h.shape == (big_h, h) and u_h.dtype == np.float32
    # Columns of the matrix are the interpolation of unit impulses.
    eye = torch.eye(h, dtype=torch.float32)[:, None, :, None].expand(h, 1, h, 1)
    ref_h = F.interpolate(eye, size=(big_h, 1), mode="bilinear", align_corners=False)[:, 0, :, 0].T
    np.testing.assert_allclose(u_h, ref_h.numpy(), rtol=0, atol=tol.bilinear_atol)
    # And the separable 2-D product equals a 2-D F.interpolate.
    s = np.random.default_rng(0).random((h, w)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(s)[None, None], size=(big_h, big_w), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(u_h @ s @ u_w.T, ref[0, 0].numpy(), rtol=0, atol=tol.bilinear_atol)


def test_bilinear_matrix_rows_sum_to_one_and_copy_is_private():
    mat = bilinear_matrix(225, 7)
    np.testing.assert_allclose(mat.sum(axis=1), 1.0, atol=1e-6)
    assert mat[0, 0] == 1.0 and mat[-1, -1] == 1.0  # clamped edges copy the border exactly
    mat[:] = 0  # the caller's copy is writable and does not alias the cache
    assert bilinear_matrix(225, 7)[0, 0] == 1.0
