"""The explainer graphs a bundle holds: valid ONNX, default-domain ops TensorRT parses (Loop bodies
included), the same results in onnx.reference as in ONNX Runtime, and a manifest that describes them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from opticam_rt.bundle import WEIGHTS, sha256_file
from opticam_rt.export.explainer_graphs import COMMON_OUTPUTS, EXPLAINER_GRAPHS
from opticam_rt.export.verify import graph_nodes, tensorrt_op_issues

METHODS = list(EXPLAINER_GRAPHS)
#: onnx.reference against ONNX Runtime on the same graph (float32 kernels, different summation order).
REFERENCE_ATOL = 1e-5


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import tiny_runtime_net

    return tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp())


def _load(bundle, method: str, external: bool = False) -> onnx.ModelProto:
    return onnx.load(str(bundle.explainer_path(method)), load_external_data=external)


@pytest.mark.parametrize("method", METHODS)
def test_graph_is_valid_default_domain_and_tensorrt_parsable(bundle, method) -> None:
    onnx.checker.check_model(str(bundle.explainer_path(method)), full_check=True)
    model = _load(bundle, method)
    nodes = list(graph_nodes(model.graph))
    assert {n.domain for n in nodes} <= {""}
    assert tensorrt_op_issues(model) == []
    loops = [n for n in model.graph.node if n.op_type == "Loop"]
    assert len(loops) == (1 if method in ("opti-cam", "score-cam", "ablation-cam") else 0)
    if loops:  # the model's layers run inside the body, and the check walked them
        body = [n for n in nodes if n.op_type == "Conv" and n not in model.graph.node]
        assert body, "no Conv found inside the Loop body"


def test_tensorrt_check_sees_inside_loop_bodies() -> None:
    """An op TensorRT cannot parse, hidden in a Loop body, is reported."""
    body = helper.make_graph(
        [helper.make_node("Det", ["m"], ["d"]), helper.make_node("Identity", ["c"], ["c_out"])],
        "body",
        [helper.make_tensor_value_info("i", onnx.TensorProto.INT64, []), helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("c_out", onnx.TensorProto.BOOL, []), helper.make_tensor_value_info("d", onnx.TensorProto.FLOAT, [])],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", ""], ["d_all"], body=body)],
        "outer",
        [helper.make_tensor_value_info("n", onnx.TensorProto.INT64, []), helper.make_tensor_value_info("m", onnx.TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("d_all", onnx.TensorProto.FLOAT, None)],
    )
    assert tensorrt_op_issues(helper.make_model(graph)) == ["Det unsupported"]


@pytest.mark.parametrize("method", METHODS)
def test_reference_evaluator_agrees_with_onnxruntime(bundle, method) -> None:
    import onnxruntime as ort
    from onnx.reference import ReferenceEvaluator

    rng = np.random.default_rng(0)
    h, w = bundle.manifest.input_size
    feeds = {"image": rng.random((2, 3, h, w), dtype=np.float32), "target": np.array([-1, 3], dtype=np.int64)}
    if method == "opti-cam":
        feeds["iterations"] = np.array(3, dtype=np.int64)  # the evaluator is slow; 3 steps exercise the loop
    if method in ("score-cam", "ablation-cam"):
        feeds["chunk"] = np.array(3, dtype=np.int64)  # K = 8: three trips, the last partial
    expected = ReferenceEvaluator(_load(bundle, method, external=True)).run(None, feeds)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(bundle.explainer_path(method)), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = session.run(None, feeds)
    for name, a, b in zip(names, expected, got):
        assert np.shape(a) == b.shape, name
        np.testing.assert_allclose(np.asarray(a), b, rtol=0, atol=REFERENCE_ATOL, err_msg=name)
    out = dict(zip(names, got))
    assert out["explained_target"][1] == 3 and out["explained_target"][0] == out["logits"][0].argmax()


@pytest.mark.parametrize("method", METHODS)
def test_manifest_describes_the_graph(bundle, method) -> None:
    entry = bundle.manifest.explainers[method]
    model = _load(bundle, method)
    inits = {
        i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.data_location != onnx.TensorProto.EXTERNAL
    }
    assert list(entry["inputs"]) == [i.name for i in model.graph.input]
    assert list(entry["outputs"]) == [o.name for o in model.graph.output]
    assert list(entry["outputs"])[: len(COMMON_OUTPUTS)] == list(COMMON_OUTPUTS)
    # Every input but the image has a default, stored in the graph as an initializer of its name.
    assert set(entry["defaults"]) == set(entry["inputs"]) - {"image"}
    for name, value in entry["defaults"].items():
        assert np.all(inits[name] == value), name
    if method == "opti-cam":
        assert entry["defaults"] == {"target": -1, "iterations": 100, "lr": pytest.approx(0.1), "tol": 0.0, "patience": 5}
        assert entry["parameters"]["loss"] == "mask"
    # Hashed like every bundle file.
    assert bundle.manifest.files[entry["file"]]["sha256"] == sha256_file(bundle.path / entry["file"])


def test_weights_stay_in_the_shared_file(bundle) -> None:
    """The layers' weights are references into weights.bin, not copies inside the explainer graphs."""
    for method in METHODS:
        model = _load(bundle, method)
        tensors = [t for g in _graphs(model.graph) for t in g.initializer]
        external = [t for t in tensors if t.data_location == onnx.TensorProto.EXTERNAL]
        assert external, method
        assert {e.value for t in external for e in t.external_data if e.key == "location"} == {WEIGHTS}


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)


def test_unknown_method_is_named(bundle) -> None:
    from opticam_rt.errors import ExportError
    from opticam_rt.export.explainer_graphs import build_explainer_graphs

    graphs = {name: onnx.load(str(bundle.graph_path(name)), load_external_data=False) for name in bundle.manifest.graphs}
    m = bundle.manifest
    with pytest.raises(ExportError, match="no explainer graph for method 'gradcam'"):
        build_explainer_graphs(graphs, m.input_size, m.tap_shape, m.num_classes, methods=["gradcam"])
