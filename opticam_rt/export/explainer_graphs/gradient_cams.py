"""Explainer graphs of the Grad-CAM family (Grad-CAM, Grad-CAM++, XGrad-CAM, Layer-CAM): one
backward pass to the tapped features, then each method's channel weighting."""

from __future__ import annotations

from opticam_rt.errors import ExportError
from opticam_rt.export.explainer_graphs.common import ExplainerGraph

GRADIENT_METHODS = ("grad-cam", "grad-cam++", "xgrad-cam", "layer-cam")


def gradient_cam(graph: ExplainerGraph, method: str) -> str:
    """The Grad-CAM family's class map (N, h, w) before upsampling (see runtime/cams.py)."""
    b, a = graph.b, graph.features
    g = b.inline(graph.g["grad_features"], {"image": "image", "cotangent": graph.cotangent})["grad_features"]
    if method == "layer-cam":
        return b.op("Relu", [b.reduce("ReduceSum", b.op("Mul", [b.op("Relu", [g]), a]), [1], 0)])
    if method == "grad-cam":
        weights = b.reduce("ReduceMean", g, [2, 3], 0)
    elif method == "xgrad-cam":
        num = b.reduce("ReduceSum", b.op("Mul", [a, g]), [2, 3], 0)
        weights = b.op("Div", [num, b.op("Add", [b.reduce("ReduceSum", a, [2, 3], 0), b.const(1e-7)])])
    elif method == "grad-cam++":
        zero = b.const(0.0)
        g2 = b.op("Mul", [g, g])
        g3 = b.op("Mul", [g2, g])
        denom = b.op("Add", [b.op("Mul", [b.const(2.0), g2]), b.op("Mul", [b.reduce("ReduceSum", a, [2, 3], 1), g3])])
        safe = b.op("Where", [b.op("Not", [b.op("Equal", [denom, zero])]), denom, b.const(1.0)])
        alpha = b.op("Where", [b.op("Not", [b.op("Equal", [g, zero])]), b.op("Div", [g2, safe]), zero])
        weights = b.reduce("ReduceSum", b.op("Mul", [alpha, b.op("Relu", [g])]), [2, 3], 0)
    else:
        raise ExportError(f"no gradient explainer graph for method {method!r}; methods: {', '.join(GRADIENT_METHODS)}")
    return b.op("Relu", [graph.weighted_sum(weights)])
