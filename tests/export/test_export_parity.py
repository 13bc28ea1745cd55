"""Every bundle graph under ONNX Runtime against an independent PyTorch autograd computation.

The references below are written here from the definitions (forward hook on the tap module,
torch.autograd.grad, F.interpolate for the upsample) and run in float64; they share no code
with ``opticam_rt.export.graphs`` or the exporter. Preprocessing ``(x - mean) / std`` is
applied to the pixels before the model, as the graphs do internally.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import PARITY_RTOL, REFERENCE_EVALUATOR_RTOL, assert_close
from graph_reference import make_feeds, reference_for
from nets import TINY_NETS

from opticam_rt.bundle import GRAPH_SIGNATURES

GRAPHS = list(GRAPH_SIGNATURES)


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
