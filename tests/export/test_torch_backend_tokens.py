"""The ``torch`` reference backend on a token-tap (ViT) bundle.

The torch runner rebuilds the model from the manifest and taps it itself, so it must read
``tap_tokens`` and lay the tokens out on the patch grid as the exported graphs do. Checked here
against an index-by-index layout written in the test (map[n, d, r, c] = tokens[n, prefix +
r * width + c, d]) and torch.autograd on the tokens, and against ONNX Runtime on the same bundle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from arch_zoo import tiny_vit
from export_helpers import PARITY_RTOL, assert_close

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TAP = "encoder.layers.encoder_layer_1.ln_1"


@pytest.fixture(scope="module")
def vit_bundle(tmp_path_factory):
    from opticam_rt.export import export_bundle

    bundle, _ = export_bundle(
        tiny_vit(), tmp_path_factory.mktemp("vit-torch") / "b", TAP, (32, 32), MEAN, STD,
        model_spec="arch_zoo:tiny_vit", verify=False, explainers=False, token_reshape=True,
    )  # fmt: skip
    return bundle


def _by_index(tokens: torch.Tensor, prefix: int, height: int, width: int) -> torch.Tensor:
    out = torch.empty(tokens.shape[0], tokens.shape[2], height, width, dtype=tokens.dtype)
    for r in range(height):
        for c in range(width):
            out[:, :, r, c] = tokens[:, prefix + r * width + c, :]
    return out


def _reference(images: np.ndarray, cotangent: np.ndarray, grid: dict) -> tuple[np.ndarray, ...]:
    """float64 logits, feature map and d(sum cotangent * logits) / d map."""
    net = tiny_vit().double().eval()
    x = torch.from_numpy(images).double()
    mean = torch.tensor(MEAN, dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).reshape(1, 3, 1, 1)
    seen: list[torch.Tensor] = []
    handle = net.get_submodule(TAP).register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        logits = net((x - mean) / std)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad((logits * torch.from_numpy(cotangent).double()).sum(), seen[0])
    layout = (grid["prefix"], grid["height"], grid["width"])
    return (logits.detach().numpy(), _by_index(seen[0].detach(), *layout).numpy(), _by_index(grad, *layout).numpy())


@pytest.mark.parametrize("backend", ["torch", "ort-cpu"])
def test_token_tap_graphs_match_the_index_layout(vit_bundle, backend) -> None:
    from opticam_rt.runtime.runners import create_runner

    grid = vit_bundle.manifest.tap_tokens
    assert grid == {"prefix": 1, "height": 4, "width": 4}
    g = np.random.default_rng(3)
    images = g.random((3, 3, 32, 32)).astype(np.float32)
    cotangent = g.standard_normal((3, vit_bundle.manifest.num_classes)).astype(np.float32)
    logits, features, grad = _reference(images, cotangent, grid)
    with create_runner(backend, vit_bundle) as runner:
        forward = runner.infer("forward", {"image": images})
        backward = runner.infer("grad_features", {"image": images, "cotangent": cotangent})
    assert_close(forward["logits"], logits, PARITY_RTOL, f"{backend} logits")
    assert_close(forward["features"], features, PARITY_RTOL, f"{backend} features")
    assert_close(backward["features"], features, PARITY_RTOL, f"{backend} grad_features' features")
    assert_close(backward["grad_features"], grad, PARITY_RTOL, f"{backend} grad_features")
