"""The five bundle computations written from their definitions in float64 PyTorch: the reference
every backend's graphs are checked against (tests/export/test_export_parity.py for ONNX Runtime,
tests/export/test_backend_conformance.py for every registered CPU backend).

They share no code with ``opticam_rt.export.graphs``, the exporter or the runners: a forward hook
on the tap module, torch.autograd.grad, F.interpolate for the upsample. Preprocessing
``(x - mean) / std`` is applied to the pixels before the model, as the graphs do internally.
"""

from __future__ import annotations

import itertools
import zlib
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from nets import TINY_NETS, TinyNet

from opticam_rt.constants import NORM_EPS


@contextmanager
def hook_tap(model: torch.nn.Module, net: TinyNet, replace: torch.Tensor | None = None) -> Iterator[list]:
    """Record the output of call ``net.tap_call`` of the tap module (and swap in ``replace``)."""
    module = model.get_submodule(net.tap_module)
    seen: list[torch.Tensor] = []
    counter = itertools.count()

    def hook(mod, args, output):
        if next(counter) == net.tap_call:
            seen.append(output)
            return replace
        return None

    handle = module.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


class Reference:
    """The five bundle computations by hand, in float64."""

    def __init__(self, net: TinyNet) -> None:
        self.net = net
        self.model = net.build().double().eval()
        self.mean = torch.tensor(net.mean, dtype=torch.float64).reshape(1, 3, 1, 1)
        self.std = torch.tensor(net.std, dtype=torch.float64).reshape(1, 3, 1, 1)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.model((image - self.mean) / self.std)

    def forward(self, image):
        with torch.no_grad(), hook_tap(self.model, self.net) as seen:
            logits = self.logits(image)
        assert len(seen) == 1, "the tap call did not happen"
        return logits, seen[0]

    def grad_features(self, image, cotangent):
        logits, features = self.forward(image)
        leaf = features.clone().requires_grad_(True)
        with hook_tap(self.model, self.net, replace=leaf):
            again = self.logits(image)
        (grad,) = torch.autograd.grad((cotangent * again).sum(), leaf)
        return logits, features, grad

    def grad_image(self, image, cotangent):
        x = image.clone().requires_grad_(True)
        logits = self.logits(x)
        (grad,) = torch.autograd.grad((cotangent * logits).sum(), x)
        return logits.detach(), grad

    def head(self, features):
        dummy = torch.zeros(features.shape[0], 3, *self.net.input_size, dtype=torch.float64)
        with torch.no_grad(), hook_tap(self.model, self.net, replace=features) as seen:
            logits = self.logits(dummy)
        assert len(seen) == 1
        return (logits,)

    def opticam_step(self, image, features, u, cotangent):
        u = u.clone().requires_grad_(True)
        weights = torch.softmax(u, dim=1)
        low = (weights[:, :, None, None] * features).sum(dim=1, keepdim=True)
        up = F.interpolate(low, size=self.net.input_size, mode="bilinear", align_corners=False)
        lo = torch.amin(up, dim=(2, 3), keepdim=True)
        hi = torch.amax(up, dim=(2, 3), keepdim=True)
        saliency = (up - lo) / (hi - lo + NORM_EPS)
        score = (cotangent * self.logits(image * saliency)).sum(dim=1)
        (grad,) = torch.autograd.grad(score.sum(), u)
        return score.detach(), grad


def make_feeds(net: TinyNet, reference: Reference, batch: int) -> dict[str, dict[str, np.ndarray]]:
    """Random float32 inputs for every graph (seeded by net and batch)."""
    g = torch.Generator().manual_seed(zlib.crc32(f"{net.name}-{batch}".encode()))
    image = torch.rand(batch, 3, *net.input_size, generator=g)
    cotangent = torch.randn(batch, net.num_classes, generator=g)
    _, features = reference.forward(image.double())
    features = features.float()
    k = features.shape[1]
    # The head is checked on features the network never produced, not only on its own.
    perturbed = features * (1 + 0.3 * torch.randn(features.shape, generator=g))
    u = torch.randn(batch, k, generator=g)
    feeds = {
        "forward": {"image": image},
        "grad_features": {"image": image, "cotangent": cotangent},
        "grad_image": {"image": image, "cotangent": cotangent},
        "head": {"features": perturbed},
        "opticam_step": {"image": image, "features": features, "u": u, "cotangent": cotangent},
    }
    return {name: {k: v.numpy() for k, v in f.items()} for name, f in feeds.items()}


_REFERENCES: dict[str, Reference] = {}


def reference_for(name: str) -> Reference:
    if name not in _REFERENCES:
        _REFERENCES[name] = Reference(TINY_NETS[name])
    return _REFERENCES[name]


