"""The built-in EfficientNet-Lite0: its recipe, and (slow) its exported, verified bundle.

The export itself runs once per session in the ``effnet_bundle`` fixture (tests/conftest.py);
``opticam-rt export --model efficientnet-lite0`` is not re-run here (minutes).
"""

from __future__ import annotations

import onnx
import pytest

from opticam_rt.bundle import GRAPH_SIGNATURES, WEIGHTS
from opticam_rt.export import BUILTIN_MODELS, load_recipe
from opticam_rt.export.weights import INLINE_LIMIT_BYTES


def test_recipe_fields() -> None:
    recipe = load_recipe("efficientnet-lite0")
    assert recipe.name == "efficientnet-lite0"
    assert recipe.tap == "_swish@1"
    assert recipe.input_size == (224, 224)
    # (p - 127) / 128 on 0..255 pixels, written for pixels in [0, 1]
    assert recipe.mean == pytest.approx((127 / 255,) * 3)
    assert recipe.std == pytest.approx((128 / 255,) * 3)
    assert len(recipe.class_names) == 1000
    assert recipe.class_names[:2] == ["tench", "goldfish"]
    assert len(set(recipe.class_names)) > 990
    assert BUILTIN_MODELS["efficientnet-lite0"].class_names is None  # filled in by load_recipe only


@pytest.mark.slow
def test_efficientnet_bundle(effnet_bundle, effnet_graphs) -> None:
    bundle, report = effnet_bundle
    assert report, report.format()
    m = bundle.manifest
    assert m.tap_layer == "_swish@1"
    assert m.tap_shape == (1280, 7, 7)
    assert m.num_classes == 1000 and len(m.class_names) == 1000
    assert bundle.class_name(0) == "tench"
    assert (m.model_name, m.model_spec, m.input_size) == ("efficientnet-lite0", "efficientnet-lite0", (224, 224))
    assert m.verification["passed"] is True
    text = report.format()
    for name in GRAPH_SIGNATURES:
        assert name in text
        assert isinstance(report.graphs[name].trt_issues, list)
        assert report.graphs[name].checker == "ok"
    # 4.65 M parameters (18.6 MB). The backward graphs also hold derived tensors (1x1 kernels
    # transposed for the input gradient), so weights.bin is up to ~2x that; each distinct tensor
    # is stored once although the five graphs reference their weights ~4x over.
    weights = (bundle.path / WEIGHTS).stat().st_size
    params = 4 * sum(p.numel() for p in effnet_graphs.model.parameters())
    assert params < weights < 2 * params, (weights, params)
    referenced = 0
    for name in GRAPH_SIGNATURES:
        model = onnx.load(str(bundle.graph_path(name)), load_external_data=False)
        for t in model.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL:
                referenced += int({e.key: e.value for e in t.external_data}["length"])
            else:
                assert len(t.raw_data) < INLINE_LIMIT_BYTES, (name, t.name)
    assert referenced > 2 * weights, (referenced, weights)


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["grad_features", "grad_image", "opticam_step"])
def test_backward_graphs_keep_the_fast_forms(effnet_bundle, graph) -> None:
    """The backward graphs carry none of the patterns docs/perf-notes.md removed: no Where (the
    ReLU6 backward is a mask multiply), no Pad right after a convolution (crops folded into
    its pads), and no per-channel Mul right before a convolution whose kernel is a constant."""
    bundle, _ = effnet_bundle
    model = onnx.load(str(bundle.graph_path(graph)), load_external_data=False)
    nodes = list(model.graph.node)
    producers = {o: n for n in nodes for o in n.output}
    constants = {t.name for t in model.graph.initializer} | {n.output[0] for n in nodes if n.op_type == "Constant"}
    ops = [n.op_type for n in nodes]
    assert "Where" not in ops
    if graph != "grad_features":  # whose backward stops at the tap, after the last ReLU6
        assert ops.count("Cast") >= 33, "the 33 ReLU6 masks are missing"
    for node in nodes:
        source = producers.get(node.input[0]) if node.input else None
        if node.op_type == "Pad":
            assert source is None or source.op_type not in ("Conv", "ConvTranspose"), f"crop after {source.name}"
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] in constants and source is not None:
            scaled = source.op_type == "Mul" and any(i in constants for i in source.input)
            assert not scaled, f"{node.name}: per-channel scale left before the convolution"
