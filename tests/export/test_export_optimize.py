"""The backward-pattern rewrites (opticam_rt/export/optimize.py) and the mask-based activation
backward rules (decompositions.py), each against PyTorch computing the unrewritten math."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from export_helpers import PARITY_RTOL, assert_close, ort_session
from onnx import TensorProto, helper, numpy_helper

from opticam_rt.export.decompositions import hardtanh_input_grad, threshold_input_grad
from opticam_rt.export.optimize import fold_backward_patterns

RNG = np.random.default_rng(7)


def _model(nodes: list, inits: dict[str, np.ndarray], x_shape: tuple[int, ...]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
        initializer=[numpy_helper.from_array(v.astype(v.dtype), k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray, tmp_path, name: str) -> np.ndarray:
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return ort_session(path).run(None, {"x": x})[0]


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize(
    ("op", "groups", "stride", "crop"),
    [
        ("Conv", 1, 1, (-1, -1, -2, 0)),
        ("Conv", 6, 1, (0, -2, -1, -1)),  # depthwise
        ("Conv", 2, 2, (-1, 0, 0, -1)),  # grouped, strided: the crop moves the pads by stride
        ("ConvTranspose", 6, 2, (-1, -1, -1, -1)),
        ("ConvTranspose", 1, 2, (0, -1, -2, 0)),
    ],
)
def test_scale_and_crop_fold_into_the_convolution(op, groups, stride, crop, tmp_path) -> None:
    """x * c -> conv -> crop equals PyTorch's float64 computation after both are folded."""
    c_in, c_out, k = 6, 6, 3
    x = RNG.standard_normal((2, c_in, 9, 10)).astype(np.float32)
    scale = RNG.uniform(0.5, 2.0, (1, c_in, 1, 1)).astype(np.float32)
    if op == "Conv":
        w = RNG.standard_normal((c_out, c_in // groups, k, k)).astype(np.float32)
        attrs = {"group": groups, "strides": [stride, stride], "pads": [2, 2, 2, 2]}
    else:
        w = RNG.standard_normal((c_in, c_out // groups, k, k)).astype(np.float32)
        attrs = {"group": groups, "strides": [stride, stride], "pads": [0, 0, 0, 0], "output_padding": [1, 1]}
    pads = np.array([0, 0, crop[0], crop[1], 0, 0, crop[2], crop[3]], dtype=np.int64)
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["scaled"]),
        helper.make_node(op, ["scaled", "w"], ["conv"], **attrs),
        helper.make_node("Pad", ["conv", "pads", "zero"], ["y"], mode="constant"),
    ]
    model = _model(nodes, {"scale": scale, "w": w, "pads": pads, "zero": np.array(0, np.float32)}, x.shape)
    counts = fold_backward_patterns(model)
    onnx.checker.check_model(model, full_check=True)
    assert counts == {"crop_into_conv": 1, "scale_into_conv": 1}
    assert _ops(model) == [op]

    xt, st, wt = (torch.from_numpy(a).double() for a in (x, scale, w))
    if op == "Conv":
        full = F.conv2d(xt * st, wt, stride=stride, padding=2, groups=groups)
    else:
        full = F.conv_transpose2d(xt * st, wt, stride=stride, output_padding=1, groups=groups)
    expected = full[:, :, -crop[0] : full.shape[2] + crop[2], -crop[1] : full.shape[3] + crop[3]]
    assert_close(_run(model, x, tmp_path, "folded"), expected.numpy(), PARITY_RTOL, f"{op} g{groups} s{stride}")


@pytest.mark.parametrize(
    "case",
    ["spatial-scale", "shared-mul", "positive-pad", "nonzero-pad-value", "crop-past-the-pads"],
)
def test_patterns_that_must_not_fold(case, tmp_path) -> None:
    """Each rewrite refuses what it cannot do exactly; the graph then stays as it was."""
    x = RNG.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = RNG.standard_normal((4, 4, 3, 3)).astype(np.float32)
    scale = RNG.uniform(0.5, 2.0, (1, 4, 1, 1)).astype(np.float32)
    pads = np.array([0, 0, -1, -1, 0, 0, -1, -1], dtype=np.int64)
    value = np.array(0, np.float32)
    conv_pads = [1, 1, 1, 1]
    if case == "spatial-scale":
        scale = RNG.uniform(0.5, 2.0, (1, 1, 6, 6)).astype(np.float32)
    elif case == "positive-pad":
        pads = np.array([0, 0, 1, 0, 0, 0, 0, 1], dtype=np.int64)
    elif case == "nonzero-pad-value":
        value = np.array(3, np.float32)
    elif case == "crop-past-the-pads":
        conv_pads = [0, 0, 0, 0]
    nodes = [
        helper.make_node("Mul", ["x", "scale"], ["scaled"]),
        helper.make_node("Conv", ["scaled", "w"], ["conv"], pads=conv_pads),
        helper.make_node("Pad", ["conv", "pads", "value"], ["cropped"], mode="constant"),
    ]
    if case == "shared-mul":
        nodes.append(helper.make_node("Add", ["cropped", "scaled"], ["y"]))
        pads = np.array([0, 0, 0, 0, 0, 0, 0, 0], dtype=np.int64)  # keep shapes equal for the Add
    else:
        nodes.append(helper.make_node("Identity", ["cropped"], ["y"]))
    model = _model(nodes, {"scale": scale, "w": w, "pads": pads, "value": value}, x.shape)
    before = _run(model, x, tmp_path, "before")
    ops_before = _ops(model)
    counts = fold_backward_patterns(model)
    if case in ("spatial-scale", "shared-mul"):
        assert counts["scale_into_conv"] == 0
    if case in ("positive-pad", "nonzero-pad-value", "crop-past-the-pads"):
        assert counts["crop_into_conv"] == 0
    if case == "shared-mul":
        assert "Mul" in _ops(model)
    np.testing.assert_allclose(_run(model, x, tmp_path, "after"), before, rtol=1e-5, atol=1e-5)
    assert len(_ops(model)) >= len(ops_before) - 1


@pytest.mark.parametrize(
    ("rule", "forward", "args"),
    [
        (hardtanh_input_grad, lambda x: F.relu6(x), (0.0, 6.0)),
        (hardtanh_input_grad, lambda x: F.hardtanh(x, -1.0, 1.0), (-1.0, 1.0)),
    ],
    ids=("relu6", "hardtanh"),
)
def test_clamp_backward_rule_matches_autograd_at_the_boundaries(rule, forward, args) -> None:
    """Inputs exactly at the clamp bounds get a zero gradient, as PyTorch's hardtanh_backward."""
    lo, hi = args
    x = torch.tensor([lo - 1, lo, lo + 1e-6, 0.5 * (lo + hi), hi - 1e-6, hi, hi + 1], dtype=torch.float64)
    x = torch.cat([x, torch.randn(64, dtype=torch.float64) * 5]).requires_grad_(True)
    g = torch.randn_like(x)
    (expected,) = torch.autograd.grad(forward(x), x, g)
    torch.testing.assert_close(rule(g, x.detach(), lo, hi), expected, rtol=0, atol=0)


def test_relu_backward_rule_matches_autograd() -> None:
    """ReLU's backward gets the ReLU output (autograd's formula), zeros included."""
    x = torch.cat([torch.zeros(4, dtype=torch.float64), torch.randn(64, dtype=torch.float64)]).requires_grad_(True)
    y = F.relu(x)
    g = torch.randn_like(x)
    (expected,) = torch.autograd.grad(y, x, g)
    torch.testing.assert_close(threshold_input_grad(g, y.detach(), 0.0), expected, rtol=0, atol=0)
