"""LeViT-style networks: attention biases looked up from a table, BatchNorm on linear layers,
hardswish, a subsampling attention, a conv + BatchNorm stem flattened to tokens.

Their exported graphs were right; PyTorch's own CPU BatchNorm2d backward (eval mode) is wrong at
batch 1 when the gradient reaches it with channels-last strides, which the stem's
``flatten(2).transpose(1, 2)`` gives. Verification and the torch backend therefore run a batch
of one as two rows. Checked against central finite differences of float64 logits (no autograd).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from arch_zoo import LeViT, calibrated
from torch import nn

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SIZE = (32, 32)


class StemTokens(nn.Module):
    """conv (no bias) + BatchNorm2d -> tokens (N, T, C) -> mean over tokens -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.patch_embed(x).flatten(2).transpose(1, 2).mean(1))


def tiny_levit() -> nn.Module:
    return calibrated(lambda: LeViT([8, 16], [16, 24], [2, 3], [1, 1], 8, 8, 7), SIZE)


def _directional_derivative(model: nn.Module, image: torch.Tensor, cotangent: torch.Tensor,
                            direction: torch.Tensor) -> float:  # fmt: skip
    """d/dt sum(cotangent * logits(normalise(image + t direction))) at 0, by central differences."""
    net = model.double().eval()
    mean = torch.tensor(MEAN, dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).reshape(1, 3, 1, 1)

    def score(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float((net((x - mean) / std) * cotangent).sum())

    h = 1e-5
    return (score(image + h * direction) - score(image - h * direction)) / (2 * h)


@pytest.mark.parametrize("build", [lambda: calibrated(StemTokens, SIZE)], ids=["stem-tokens"])
def test_batch_one_reference_gradient_is_the_finite_difference(build):
    """(The tiny LeViT's hardswishes sit too close to their kinks for finite differences to
    converge: 2258.5, 2263.4 and 2263.5 at steps 1e-5, 1e-6, 1e-7.)"""
    from opticam_rt.export.exporter import build_graphs
    from opticam_rt.export.verify import _torch_outputs

    model = build()
    graphs, _, _ = build_graphs(model, "patch_embed", SIZE, MEAN, STD)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, *SIZE, generator=g, dtype=torch.float64)
    cotangent = torch.randn(1, 7, generator=g, dtype=torch.float64)
    feeds = {"image": image.numpy(), "cotangent": cotangent.numpy()}
    _, grad = _torch_outputs(graphs.to_float64(), "grad_image", feeds, torch.float64)
    for _ in range(3):
        direction = torch.randn(image.shape, generator=g, dtype=torch.float64)
        expected = _directional_derivative(build(), image, cotangent, direction)
        assert float((torch.from_numpy(grad) * direction).sum()) == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_levit_exports_and_verifies_at_batch_one(tmp_path):
    """The whole export with verification on (random and photo cases at batch 1 and 3), and the
    ONNX Runtime image gradient at batch 1 against float64 autograd on the image and a second one."""
    from export_helpers import ort_session

    from opticam_rt.export import export_bundle

    bundle, report = export_bundle(tiny_levit(), tmp_path / "b", "blocks", SIZE, MEAN, STD, explainers=False,
                                   token_reshape=True)  # fmt: skip
    assert report, report.format()
    assert report.graphs["grad_image"].norm_errors["random-b1"] < 1e-2
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, *SIZE, generator=g)
    cotangent = torch.randn(1, 7, generator=g)
    (_, grad) = ort_session(bundle.graph_path("grad_image")).run(None, {"image": image.numpy(),
                                                                        "cotangent": cotangent.numpy()})  # fmt: skip
    net = tiny_levit().double()
    x = torch.cat([image, torch.rand(1, 3, *SIZE, generator=g)]).double().requires_grad_(True)
    mean = torch.tensor(MEAN, dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).reshape(1, 3, 1, 1)
    (expected,) = torch.autograd.grad((net((x - mean) / std)[:1] * cotangent.double()).sum(), x)
    expected = expected[:1].numpy()
    assert np.linalg.norm(grad - expected) / np.linalg.norm(expected) < 1e-2
    # PyTorch's own batch-1 gradient is the wrong one (when this starts to fail, PyTorch is fixed
    # and the batch-of-two workaround can go)
    x1 = x[:1].detach().clone().requires_grad_(True)
    (wrong,) = torch.autograd.grad((net((x1 - mean) / std) * cotangent.double()).sum(), x1)
    assert np.linalg.norm(wrong.numpy() - expected) / np.linalg.norm(expected) > 0.5


def test_torch_backend_gradient_at_batch_one_is_the_batch_of_two_row():
    """The torch backend's TorchClassifier at batch 1 gives the gradient batch 2 gives its row."""
    from opticam_rt.reference import TorchClassifier

    classifier = TorchClassifier(calibrated(StemTokens, SIZE), "patch_embed", MEAN, STD)
    g = torch.Generator().manual_seed(2)
    images = torch.rand(2, 3, *SIZE, generator=g)
    grads = []
    for batch in (images[:1], images):
        x = batch.clone().requires_grad_(True)
        logits = classifier.logits(x)
        (grad,) = torch.autograd.grad(logits[:, 3].sum(), x)
        grads.append(grad)
    np.testing.assert_allclose(grads[0].numpy(), grads[1][:1].numpy(), rtol=1e-4, atol=1e-7)
