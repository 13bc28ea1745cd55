"""Opti-CAM where it is deterministic: one objective/gradient evaluation from a given u, the map
rebuilt from u, and the Adam update.

The objective is score = logit_target(model(x * minmax(up(sum_k softmax(u)_k A_k)))), its
gradient taken w.r.t. u. Three computations are compared: the fused ONNX graph
(``opticam_step``), the split pipeline (NumPy mask kernel + ``grad_image`` graph + kernel adjoint)
and PyTorch autograd written here from the definition (F.interpolate bilinear,
align_corners=False, NORM_EPS), in float32 and float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from opticam_rt.constants import NORM_EPS
from opticam_rt.export import load_recipe
from opticam_rt.kernels import opticam_forward
from opticam_rt.methods.contract import MethodContext
from opticam_rt.methods.opti_cam import Adam, OptiCAM


def torch_objective(model, mean, std, images, features, u, targets, dtype):
    """score (N,), grad_u (N, K), saliency (N, H, W) as float64 NumPy, computed in ``dtype``."""
    model = model.to(dtype)
    x = torch.from_numpy(images).to(dtype)
    a = torch.from_numpy(features).to(dtype)
    uu = torch.from_numpy(u).to(dtype).requires_grad_(True)
    m = torch.tensor(mean, dtype=dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=dtype).view(1, 3, 1, 1)
    cam = (torch.softmax(uu, dim=1)[:, :, None, None] * a).sum(dim=1, keepdim=True)
    up = F.interpolate(cam, size=images.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    saliency = (up - lo) / (hi - lo + NORM_EPS)
    logits = model((x * saliency[:, None] - m) / s)
    score = logits[torch.arange(len(targets)), torch.from_numpy(targets)]
    (grad,) = torch.autograd.grad(score.sum(), uu)
    return score.detach().double().numpy(), grad.double().numpy(), saliency.detach().double().numpy()


def _setup(explainer, images, seed, u_scale=1.0):
    """Context for 2 images, targets = top-1, and a random u (2, K)."""
    logits, features = explainer.predict(images)
    targets = logits.argmax(axis=1)
    ctx = MethodContext(explainer.runner, images, targets, logits, features)
    u = (np.random.default_rng(seed).standard_normal(features.shape[:2]) * u_scale).astype(np.float32)
    return ctx, u


def _model(bundle):
    m = bundle.manifest
    return load_recipe(m.model_spec or m.model_name).build().eval()


@pytest.fixture(scope="module")
def tiny_step(tiny_ort, tiny_bundle, tiny_images):
    ctx, u = _setup(tiny_ort, tiny_images[1:3], seed=0, u_scale=2.0)
    model, m = _model(tiny_bundle), tiny_bundle.manifest
    ref = {dt: torch_objective(model, m.mean, m.std, ctx.images, ctx.features, u, ctx.targets, dt) for dt in (torch.float32, torch.float64)}
    return ctx, u, ref


@pytest.mark.parametrize("pipeline", ("fused", "split"))
def test_tiny_single_step_matches_torch(pipeline, tiny_step, tol, check):
    ctx, u, ref = tiny_step
    score, grad = OptiCAM.objective(ctx, u, np.arange(2), pipeline)
    score64, grad64, _ = ref[torch.float64]
    assert score.shape == (2,) and grad.shape == u.shape
    assert np.abs(grad64).max() > 1e-3, "degenerate case: the gradient is ~0"
    assert check.relative_error(score, score64) <= tol.STEP_RTOL
    assert check.relative_error(grad, grad64) <= tol.STEP_RTOL


def test_tiny_fused_equals_split(tiny_step, tol, check):
    ctx, u, _ = tiny_step
    s1, g1 = OptiCAM.objective(ctx, u, np.arange(2), "fused")
    s2, g2 = OptiCAM.objective(ctx, u, np.arange(2), "split")
    assert check.relative_error(s1, s2) <= tol.STEP_RTOL
    assert check.relative_error(g1, g2) <= tol.STEP_RTOL


def test_tiny_rows_subset_selects_images(tiny_step, tol, check):
    """objective(rows=[1]) is row 1 of the full evaluation (what early stopping relies on)."""
    ctx, u, ref = tiny_step
    for pipeline in ("fused", "split"):
        score, grad = OptiCAM.objective(ctx, u, np.array([1]), pipeline)
        assert check.relative_error(score, ref[torch.float64][0][1:]) <= tol.STEP_RTOL
        assert check.relative_error(grad, ref[torch.float64][1][1:]) <= tol.STEP_RTOL


def test_tiny_rebuilt_map_matches_torch(tiny_step, tol, check):
    ctx, u, ref = tiny_step
    maps, masked, _ = opticam_forward(ctx.features, u, ctx.images)
    expected = ref[torch.float64][2]
    assert check.relative_error(maps, expected) <= tol.STEP_RTOL
    assert check.relative_error(masked, ctx.images * expected[:, None]) <= tol.STEP_RTOL


def test_tiny_single_step_with_tied_min_and_max(tiny_ort, tiny_bundle, tiny_images, tol, check):
    """Features whose corner cells hold the extremes: bilinear upsampling (align_corners=False)
    clamps at the border, so the map's max and min are each a block of tied pixels and the
    min-max gradient must be split over the ties as torch.amin/amax autograd does."""
    ctx, u = _setup(tiny_ort, tiny_images[:2], seed=5)
    f = ctx.features.copy()
    f[:, :, 0, 0] = f.max() + 1.0
    f[:, :, -1, -1] = min(f.min(), 0.0) - 1.0
    ctx.features = f
    model, m = _model(tiny_bundle), tiny_bundle.manifest
    s64, g64, map64 = torch_objective(model, m.mean, m.std, ctx.images, f, u, ctx.targets, torch.float64)
    for saliency in map64:
        assert (saliency == saliency.max()).sum() > 1 and (saliency == saliency.min()).sum() > 1
    for pipeline in ("fused", "split"):
        score, grad = OptiCAM.objective(ctx, u, np.arange(2), pipeline)
        assert check.relative_error(score, s64) <= tol.STEP_RTOL, pipeline
        assert check.relative_error(grad, g64) <= tol.STEP_RTOL, pipeline


@pytest.mark.slow
def test_effnet_single_step_within_float32_floor(effnet_ort, effnet, effnet_images, tol, check):
    """EfficientNet's ReLU6 gates flip under float32 rounding: gradients are held to
    max(STEP_RTOL, FLOOR_FACTOR * floor), floor = PyTorch float32's own error against float64
    (measured: floor ~4e-3, fused ~3e-3, split ~1e-3). Scores and maps stay at STEP_RTOL."""
    ctx, u = _setup(effnet_ort, effnet_images[:2], seed=1)
    model, m = _model(effnet), effnet.manifest
    s32, g32, _ = torch_objective(model, m.mean, m.std, ctx.images, ctx.features, u, ctx.targets, torch.float32)
    s64, g64, map64 = torch_objective(model, m.mean, m.std, ctx.images, ctx.features, u, ctx.targets, torch.float64)
    score_limit = max(tol.STEP_RTOL, tol.FLOOR_FACTOR * check.relative_error(s32, s64))
    grad_floor = check.relative_error(g32, g64)
    grad_limit = max(tol.STEP_RTOL, tol.FLOOR_FACTOR * grad_floor)
    assert grad_limit < 0.05, f"float32 floor {grad_floor:.2e} too large to test anything"
    for pipeline in ("fused", "split"):
        score, grad = OptiCAM.objective(ctx, u, np.arange(2), pipeline)
        assert check.relative_error(score, s64) <= score_limit, pipeline
        err = check.relative_error(grad, g64)
        assert err <= grad_limit, f"{pipeline}: grad error {err:.2e} > limit {grad_limit:.2e} (floor {grad_floor:.2e})"
    maps, _, _ = opticam_forward(ctx.features, u, ctx.images)
    assert check.relative_error(maps, map64) <= tol.STEP_RTOL


def test_adam_matches_torch_optim(tol, check):
    """Adam on all rows for 3 steps, then on row 1 only: the frozen row keeps u and its state."""
    rng = np.random.default_rng(3)
    u0 = rng.standard_normal((2, 5)).astype(np.float32)
    grads = [rng.standard_normal((2, 5)).astype(np.float32) for _ in range(5)]
    u = u0.copy()
    adam = Adam(lr=0.1)
    adam.init(u.shape)
    tu = [torch.tensor(u0[i : i + 1], requires_grad=True) for i in range(2)]
    topt = [torch.optim.Adam([t], lr=0.1) for t in tu]
    for step, g in enumerate(grads):
        rows = np.arange(2) if step < 3 else np.array([1])
        adam.step(u, g[rows], rows)
        for i in rows:
            topt[i].zero_grad()
            tu[i].grad = torch.from_numpy(g[i : i + 1].copy())
            topt[i].step()
    expected = np.concatenate([t.detach().numpy() for t in tu])
    assert check.relative_error(u, expected) <= tol.ADAM_RTOL
    np.testing.assert_array_equal(adam.t, [3, 5])
