"""Every bundle graph under ONNX Runtime against an independent PyTorch autograd computation.

The references below are written here from the definitions (forward hook on the tap module,
torch.autograd.grad, F.interpolate for the upsample) and run in float64; they share no code
with ``opticam_rt.export.graphs`` or the exporter. Preprocessing ``(x - mean) / std`` is
applied to the pixels before the model, as the graphs do internally.
"""

from __future__ import annotations

import itertools
import zlib
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from export_helpers import PARITY_RTOL, REFERENCE_EVALUATOR_RTOL, assert_close
from nets import TINY_NETS, TinyNet

from opticam_rt.bundle import GRAPH_SIGNATURES
from opticam_rt.constants import NORM_EPS

GRAPHS = list(GRAPH_SIGNATURES)


# --- independent PyTorch reference ------------------------------------------------------------


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


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("net_name", list(TINY_NETS))
def test_graph_matches_pytorch_autograd(net_name: str, graph: str, batch: int, sessions) -> None:
    net = TINY_NETS[net_name]
    reference = reference_for(net_name)
    feeds = make_feeds(net, reference, batch)[graph]
    session = sessions(net_name, graph)
    got = session.run(None, feeds)
    inputs = [torch.from_numpy(feeds[n]).double() for n in GRAPH_SIGNATURES[graph][0]]
    expected = [t.detach().numpy() for t in getattr(reference, graph)(*inputs)]
    names = GRAPH_SIGNATURES[graph][1]
    assert [o.name for o in session.get_outputs()] == list(names)
    assert len(got) == len(expected) == len(names)
    for out_name, a, e in zip(names, got, expected):
        assert a.dtype == np.float32, f"{graph}.{out_name} is {a.dtype}"
        assert_close(a, e, PARITY_RTOL, what=f"{net_name} {graph}.{out_name} batch {batch}")


@pytest.mark.parametrize("net_name", list(TINY_NETS))
def test_dynamic_batch_and_images_independent(net_name: str, sessions) -> None:
    """One bundle runs batch 1, 3 and 5; row i of a batch equals image i run alone."""
    net = TINY_NETS[net_name]
    reference = reference_for(net_name)
    feeds5 = make_feeds(net, reference, 5)
    for graph in GRAPHS:
        session = sessions(net_name, graph)
        full = session.run(None, feeds5[graph])
        for out in full:
            assert out.shape[0] == 5, f"{graph}: batch 5 gave {out.shape}"
        for lo, hi in ((0, 1), (1, 4), (4, 5)):  # batch 1, 3, 1
            part = session.run(None, {k: v[lo:hi] for k, v in feeds5[graph].items()})
            for name, a, b in zip(GRAPH_SIGNATURES[graph][1], part, full):
                assert a.shape[0] == hi - lo
                assert_close(a, b[lo:hi], PARITY_RTOL, what=f"{net_name} {graph}.{name} rows {lo}:{hi}")


def test_graph_io_shapes_follow_manifest(tiny_bundle, sessions) -> None:
    """Inputs and outputs are named as GRAPH_SIGNATURES says, with a symbolic batch dimension."""
    import onnx

    for net_name, net in TINY_NETS.items():
        bundle, _ = tiny_bundle(net_name)
        k, h, w = bundle.manifest.tap_shape
        assert (k, h, w) == net.tap_shape
        H, W = net.input_size
        expected_inputs = {
            "image": [3, H, W],
            "cotangent": [net.num_classes],
            "features": [k, h, w],
            "u": [k],
        }
        for graph, (inputs, outputs) in GRAPH_SIGNATURES.items():
            model = onnx.load(str(bundle.graph_path(graph)), load_external_data=False)
            assert [i.name for i in model.graph.input] == list(inputs)
            assert [o.name for o in model.graph.output] == list(outputs)
            for value in model.graph.input:
                dims = value.type.tensor_type.shape.dim
                assert dims[0].dim_param, f"{graph}.{value.name}: batch dimension is not symbolic"
                assert [d.dim_value for d in dims[1:]] == expected_inputs[value.name], (graph, value.name)


def test_reference_evaluator_matches_onnxruntime(tiny_bundle, sessions) -> None:
    """onnx.reference runs every graph (no runtime-specific ops) and agrees with ONNX Runtime."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    net_name = "branch"
    net = TINY_NETS[net_name]
    bundle, _ = tiny_bundle(net_name)
    feeds = make_feeds(net, reference_for(net_name), 2)
    for graph in GRAPHS:
        model = onnx.load(str(bundle.graph_path(graph)))  # with weights.bin
        got = ReferenceEvaluator(model).run(None, feeds[graph])
        expected = sessions(net_name, graph).run(None, feeds[graph])
        for name, a, e in zip(GRAPH_SIGNATURES[graph][1], got, expected):
            assert_close(a, e, REFERENCE_EVALUATOR_RTOL, what=f"onnx.reference {graph}.{name}")


@pytest.mark.parametrize("net_name", list(TINY_NETS))
def test_graphs_use_default_domain_ops_at_opset_17_or_later(net_name: str, tiny_bundle) -> None:
    import onnx

    bundle, _ = tiny_bundle(net_name)
    assert bundle.manifest.opset >= 17
    for graph in GRAPHS:
        model = onnx.load(str(bundle.graph_path(graph)), load_external_data=False)
        imports = {o.domain: o.version for o in model.opset_import}
        assert imports.get("", imports.get("ai.onnx", 0)) >= 17, f"{graph}: opset imports {imports}"
        assert set(imports) <= {"", "ai.onnx"}, f"{graph}: non-default opset imports {imports}"
        nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
        odd = sorted({f"{n.domain}::{n.op_type}" for n in nodes if n.domain not in ("", "ai.onnx")})
        assert not odd, f"{graph}: non-default-domain ops {odd}"
