"""export/float64.py: an ONNX graph made float64, run with PyTorch's float64 convolutions.

Conv and ConvTranspose (asymmetric pads, strides, dilations, groups, output padding) are
compared with the ONNX reference evaluator's own implementation of the same node, in float64.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from opticam_rt.export.float64 import Float64Graph, to_float64

CONVS = [
    ("Conv", dict(pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2], group=1), (2, 4, 9, 8), (6, 4, 3, 3)),
    ("Conv", dict(pads=[1, 1, 1, 1], strides=[1, 1], group=4), (1, 4, 7, 7), (8, 1, 3, 3)),
    ("ConvTranspose", dict(pads=[1, 0, 0, 1], strides=[2, 2], output_padding=[1, 0]), (2, 4, 5, 6), (4, 3, 3, 3)),
    ("ConvTranspose", dict(pads=[2, 2, 2, 2], strides=[1, 1], dilations=[2, 1]), (1, 4, 6, 5), (4, 2, 3, 3)),
]


def _single_node(op: str, attrs: dict, x_shape: tuple, w_shape: tuple) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    out_channels = w_shape[0] if op == "Conv" else w_shape[1] * attrs.get("group", 1)
    weights = [onnx.numpy_helper.from_array(rng.standard_normal(w_shape).astype(np.float32), "W"),
               onnx.numpy_helper.from_array(rng.standard_normal(out_channels).astype(np.float32), "B")]  # fmt: skip
    node = helper.make_node(op, ["X", "W", "B"], ["Y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], weights)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize(("op", "attrs", "x_shape", "w_shape"), CONVS)
def test_torch_convolutions_match_the_onnx_reference(tmp_path, op, attrs, x_shape, w_shape):
    from onnx.reference import ReferenceEvaluator

    model = _single_node(op, attrs, x_shape, w_shape)
    onnx.save(model, tmp_path / "g.onnx")
    x = np.random.default_rng(1).standard_normal(x_shape)
    (expected,) = ReferenceEvaluator(to_float64(model)).run(None, {"X": x})
    (got,) = Float64Graph(tmp_path / "g.onnx").run({"X": x})
    assert got.dtype == np.float64 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_grouped_conv_transpose_is_the_groups_side_by_side(tmp_path):
    """The reference evaluator has no grouped ConvTranspose (a depthwise conv's input gradient):
    compare with each group's ungrouped ConvTranspose by the reference, concatenated."""
    from onnx.reference import ReferenceEvaluator

    attrs = dict(pads=[2, 1, 1, 2], strides=[2, 1], dilations=[2, 1], output_padding=[1, 0])
    model = _single_node("ConvTranspose", {**attrs, "group": 2}, (1, 4, 6, 5), (4, 3, 3, 3))
    onnx.save(model, tmp_path / "g.onnx")
    w = onnx.numpy_helper.to_array(model.graph.initializer[0]).astype(np.float64)
    b = onnx.numpy_helper.to_array(model.graph.initializer[1]).astype(np.float64)
    x = np.random.default_rng(2).standard_normal((1, 4, 6, 5))
    parts = []
    for g in range(2):
        node = helper.make_node("ConvTranspose", ["X", "W", "B"], ["Y"], **attrs)
        part = ReferenceEvaluator(node).run(None, {"X": x[:, 2 * g:2 * g + 2], "W": w[2 * g:2 * g + 2],
                                                   "B": b[3 * g:3 * g + 3]})[0]  # fmt: skip
        parts.append(part)
    (got,) = Float64Graph(tmp_path / "g.onnx").run({"X": x})
    np.testing.assert_allclose(got, np.concatenate(parts, axis=1), rtol=1e-12, atol=1e-12)


def test_every_float32_tensor_becomes_float64():
    model = _single_node(*CONVS[0])
    cast = helper.make_node("Cast", ["Y"], ["Z"], to=TensorProto.FLOAT)
    model.graph.node.append(cast)
    model.graph.output[0].name = "Z"
    converted = to_float64(model)
    assert {t.data_type for t in converted.graph.initializer} == {TensorProto.DOUBLE}
    assert converted.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    assert converted.graph.node[-1].attribute[0].i == TensorProto.DOUBLE
    assert {t.data_type for t in model.graph.initializer} == {TensorProto.FLOAT}  # the original is untouched
