"""What a bundle holds on disk: manifest fields, hashes, weights stored once, the verification report."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from export_helpers import PARITY_RTOL
from nets import TINY_NETS

import opticam_rt
from opticam_rt.bundle import GRAPH_SIGNATURES, MANIFEST, SCHEMA_VERSION, WEIGHTS, sha256_file
from opticam_rt.export.explainer_graphs import EXPLAINER_GRAPHS
from opticam_rt.export.weights import INLINE_LIMIT_BYTES

GRAPHS = list(GRAPH_SIGNATURES)


@pytest.mark.parametrize("net_name", list(TINY_NETS))
def test_manifest_content(net_name: str, tiny_bundle) -> None:
    import torch

    net = TINY_NETS[net_name]
    bundle, _ = tiny_bundle(net_name)
    raw = json.loads((bundle.path / MANIFEST).read_text())
    m = bundle.manifest
    assert raw["schema_version"] == m.schema_version == SCHEMA_VERSION
    assert m.model_name == net_name
    assert m.input_size == net.input_size
    assert m.mean == pytest.approx(net.mean) and m.std == pytest.approx(net.std)
    # The call index is always written out, even for a module that runs once.
    assert m.tap_layer == (net.tap if "@" in net.tap else f"{net.tap}@0")
    assert m.tap_shape == net.tap_shape
    assert m.num_classes == net.num_classes
    assert m.class_names == [f"c{i}" for i in range(net.num_classes)]
    assert bundle.class_name(1) == "c1" and bundle.class_name(net.num_classes) is None
    assert m.opset == 18
    assert m.graphs == {name: f"{name}.onnx" for name in GRAPHS}
    assert m.model_spec == f"nets:{net.build.__name__}"  # given by the fixture, recorded as given
    assert m.producer == {
        "opticam-rt": opticam_rt.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": pytest.importorskip("onnxscript").__version__,
    }
    # Every file but the manifest is listed with its size and sha256.
    on_disk = {p.name for p in bundle.path.iterdir()} - {MANIFEST}
    explainer_files = {entry["file"] for entry in m.explainers.values()}
    # one self-contained explainer graph per registered method that has one
    assert explainer_files == {f"{name}.onnx" for name in EXPLAINER_GRAPHS.values()}
    assert set(m.files) == on_disk == {*m.graphs.values(), *explainer_files, WEIGHTS}
    for name, info in m.files.items():
        path = bundle.path / name
        assert info == {"sha256": sha256_file(path), "bytes": path.stat().st_size}, name


@pytest.mark.parametrize("net_name", list(TINY_NETS))
def test_verification_report(net_name: str, tiny_bundle) -> None:
    bundle, report = tiny_bundle(net_name)
    assert report, report.format()
    assert list(report.graphs) == GRAPHS
    for name, check in report.graphs.items():
        assert check.checker == "ok", (name, check.checker)
        # random and real photos (scikit-image), batch 1 and 3
        assert set(check.errors) >= {"random-b1", "random-b3"}, check.errors
        assert check.max_error <= PARITY_RTOL, (name, check.errors)
        assert check.trt_issues == [], (name, check.trt_issues)  # TensorRT op report: nothing to flag
        assert check.ops and all(op[0].isupper() for op in check.ops)
    text = report.format()
    for name in GRAPHS:
        assert any(line.startswith(name) and "all ops supported" in line for line in text.splitlines()), name
    assert "Verification PASSED" in text
    # The manifest keeps the report.
    stored = bundle.manifest.verification
    assert stored["passed"] is True
    assert set(stored["graphs"]) == set(GRAPHS)
    assert stored["graphs"]["opticam_step"]["tensorrt_issues"] == []


def _initializer_bytes(path) -> list[tuple[str, int, bool]]:
    model = onnx.load(str(path), load_external_data=False)
    out = []
    for t in model.graph.initializer:
        external = t.data_location == onnx.TensorProto.EXTERNAL
        size = int(next(e.value for e in t.external_data if e.key == "length")) if external else len(t.raw_data)
        out.append((t.name, size, external))
    return out


def test_weights_stored_once(tiny_bundle) -> None:
    """ConvNet's 147 KB fc1 weight: in weights.bin exactly once, in no .onnx file, and every
    graph that uses it points at the same bytes."""
    net = TINY_NETS["conv"]
    bundle, _ = tiny_bundle("conv")
    weights = (bundle.path / WEIGHTS).read_bytes()
    fc1 = net.build().fc1.weight.detach().numpy()
    assert fc1.nbytes == 512 * 72 * 4
    layouts = [fc1.tobytes(), np.ascontiguousarray(fc1.T).tobytes()]  # as is, or transposed for MatMul
    assert sum(weights.count(b) for b in layouts) == 1
    params = sum(p.numel() * 4 for p in net.build().parameters())
    assert len(weights) < 1.5 * params, "weights.bin holds more than one copy of the parameters"

    places: dict[str, set[tuple[str, str, str]]] = {}
    for graph in GRAPHS:
        path = bundle.graph_path(graph)
        blob = path.read_bytes()
        assert not any(b in blob for b in layouts), f"{graph}.onnx holds fc1's weight inline"
        for name, size, external in _initializer_bytes(path):
            assert external or size < INLINE_LIMIT_BYTES, f"{graph}: {name} ({size} bytes) stored inline"
        model = onnx.load(str(path), load_external_data=False)
        for t in model.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                info = {e.key: e.value for e in t.external_data}
                assert info["location"] == WEIGHTS
                assert int(info["offset"]) % 64 == 0
                if int(info["length"]) == fc1.nbytes:
                    places.setdefault(graph, set()).add((info["location"], info["offset"], info["length"]))
    # fc1 runs in every graph (the forward and head directly, the backward graphs through fc1's
    # transpose product); all references are to one place in weights.bin.
    assert set(places) == set(GRAPHS), places
    assert len(set().union(*places.values())) == 1, places

    # The graphs load their weights from weights.bin.
    offset = int(next(iter(next(iter(places.values()))))[1])
    assert weights[offset : offset + fc1.nbytes] in layouts


def test_prepare_model_shares_weights_and_leaves_the_caller_alone() -> None:
    """The export's frozen eval-mode copy aliases the caller's parameters (weights held once)
    without changing the caller's mode or requires_grad; the float64 reference converts them."""
    from opticam_rt.export import build_graphs, prepare_model

    net = TINY_NETS["conv"]
    model = net.build().train()
    frozen = prepare_model(model)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(model.parameters(), frozen.parameters()))
    graphs, _, _ = build_graphs(model, net.tap, net.input_size, net.mean, net.std)
    reference = graphs.to_float64()
    assert {p.dtype for p in reference.model.parameters()} == {torch.float64}
    assert all(p.dtype == torch.float32 for p in graphs.model.parameters())
    x = torch.rand(2, 3, *net.input_size, dtype=torch.float64)
    assert torch.allclose(reference.logits(x), graphs.logits(x.float()).double(), rtol=1e-4, atol=1e-5)
