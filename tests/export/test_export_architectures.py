"""The common architecture families (tests/arch_zoo.py, tiny widths) export, verify and explain.

Each family is exported once with verification on; the bundle's gradients and its Grad-CAM and
Opti-CAM maps are then checked against a PyTorch float64 computation written here from the
definitions (forward hook on the tap module, torch.autograd.grad, F.interpolate), sharing no code
with the exporter. The ViT's token reshape is re-written here too.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from arch_zoo import FAMILIES, calibrated
from export_helpers import PARITY_RTOL, assert_close

from opticam_rt.constants import NORM_EPS

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: Maps are min-max normalised, which divides float32 rounding by the map's range.
MAP_ATOL = 1e-3


@pytest.fixture(scope="module")
def family_bundle(tmp_path_factory):
    """``family_bundle(name)`` -> (model, tap path, Bundle, VerificationReport), exported once."""
    from opticam_rt.export import export_bundle

    cache: dict[str, tuple] = {}

    def get(name: str) -> tuple:
        if name not in cache:
            family = FAMILIES[name]
            model = calibrated(family.tiny, family.tiny_size)
            tap = family.tap_for(model)
            out = tmp_path_factory.mktemp(f"arch-{name}") / "bundle"
            bundle, report = export_bundle(
                model, out, tap=tap, input_size=family.tiny_size, mean=MEAN, std=STD,
                model_name=name, verify=True, token_reshape=family.token_tap,
            )
            cache[name] = (model, tap, bundle, report)
        return cache[name]

    return get


def _images(family, n: int, seed: int = 1) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *family.tiny_size, generator=g).numpy()


def _patch_map(tokens: torch.Tensor, size: tuple[int, int], patch: int) -> torch.Tensor:
    """(N, 1 + h*w, D) ViT tokens -> (N, D, h, w): the class token dropped, patches row-major."""
    h, w = size[0] // patch, size[1] // patch
    return tokens[:, 1:, :].reshape(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2)


def _reference(name: str, model: torch.nn.Module, tap: str, images: np.ndarray, targets: np.ndarray):
    """float64 (logits, features, d logit_target / d features, d logit_target / d image)."""
    family = FAMILIES[name]
    net = copy.deepcopy(model).double().eval()
    x = torch.from_numpy(images).double().requires_grad_(True)
    mean = torch.tensor(MEAN, dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).reshape(1, 3, 1, 1)
    seen: list[torch.Tensor] = []

    def hook(module, args, output):
        seen.append(output)
        return output.clone()  # the model may modify its output in place (DenseNet)

    handle = net.get_submodule(tap).register_forward_hook(hook)
    try:
        logits = net((x - mean) / std)
    finally:
        handle.remove()
    score = logits[torch.arange(len(targets)), torch.from_numpy(targets)].sum()
    grad_tap, grad_x = torch.autograd.grad(score, [seen[0], x])
    features = seen[0].detach()
    if family.token_tap:
        patch = net.patch_size
        features = _patch_map(features, family.tiny_size, patch)
        grad_tap = _patch_map(grad_tap, family.tiny_size, patch)
    return logits.detach().numpy(), features.numpy(), grad_tap.numpy(), grad_x.numpy()


def _gradcam(features: np.ndarray, grads: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Grad-CAM (N, H, W): relu(sum_k mean_ij(g_k) A_k), bilinear upsample, per-image min-max."""
    weights = torch.from_numpy(grads).mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * torch.from_numpy(features)).sum(1, keepdim=True))
    up = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    return ((up - lo) / (hi - lo + NORM_EPS)).numpy()


NAMES = list(FAMILIES)


@pytest.mark.parametrize("name", NAMES)
def test_family_exports_and_verifies(family_bundle, name):
    _, _, bundle, report = family_bundle(name)
    assert report, report.format()
    recorded = bundle.manifest.verification
    assert recorded["passed"] is True
    assert set(recorded["graphs"]) == set(bundle.manifest.graphs)
    assert all(g["passed"] for g in recorded["graphs"].values())


@pytest.mark.parametrize("name", NAMES)
def test_family_gradients_match_autograd(family_bundle, name):
    """grad_features and grad_image at batch 3 (the export traced batch 2) against float64 autograd."""
    from export_helpers import ort_session

    model, tap, bundle, _ = family_bundle(name)
    family = FAMILIES[name]
    images = _images(family, 3)
    logits, features, grad_f, grad_x = _reference(name, model, tap, images, np.array([0, 3, 6]))
    cotangent = np.zeros((3, logits.shape[1]), dtype=np.float32)
    cotangent[np.arange(3), [0, 3, 6]] = 1
    feeds = {"image": images, "cotangent": cotangent}
    got_f = ort_session(bundle.graph_path("grad_features")).run(None, feeds)
    got_x = ort_session(bundle.graph_path("grad_image")).run(None, feeds)
    assert_close(got_f[0], logits, what=f"{name} logits")
    assert_close(got_f[1], features, what=f"{name} features")
    assert_close(got_f[2], grad_f, what=f"{name} grad_features")
    assert_close(got_x[1], grad_x, rtol=PARITY_RTOL, what=f"{name} grad_image")


@pytest.mark.parametrize("name", NAMES)
def test_family_explains(family_bundle, name):
    """Grad-CAM equals the reference map; Opti-CAM's first objective equals the reference's."""
    from opticam_rt.runtime import Explainer

    model, tap, bundle, _ = family_bundle(name)
    family = FAMILIES[name]
    images = _images(family, 2, seed=2)
    with Explainer(bundle, backend="ort-cpu", threads=1) as explainer:
        grad_cam = explainer.explain(images, method="grad-cam")
        opti = explainer.explain(images, method="opti-cam", iterations=3)
    targets = grad_cam.targets
    logits, features, grad_f, _ = _reference(name, model, tap, images, targets)
    assert (targets == logits.argmax(1)).all()
    np.testing.assert_allclose(grad_cam.maps, _gradcam(features, grad_f, family.tiny_size), atol=MAP_ATOL)

    # Opti-CAM starts from equal channel weights: S = minmax(up(mean_k A_k)); trace[:, 0] = -logit_c(x * S).
    up = F.interpolate(torch.from_numpy(features).mean(1, keepdim=True), size=family.tiny_size,
                       mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
    mask = ((up - lo) / (hi - lo + NORM_EPS)).numpy()
    masked_logits, _, _, _ = _reference(name, model, tap, (images * mask[:, None]).astype(np.float32), targets)
    expected = -masked_logits[np.arange(2), targets]
    np.testing.assert_allclose(opti.trace[:, 0], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert opti.maps.shape == (2, *family.tiny_size)
    assert np.isfinite(opti.trace).all() and (opti.maps >= 0).all() and (opti.maps <= 1).all()
