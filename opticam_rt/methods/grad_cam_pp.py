"""Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19), with the exponential's higher-order gradients
written as powers of the first, as the authors' code does:
alpha = g^2 / (2 g^2 + sum_ij A * g^3), w_k = sum_ij alpha * relu(g)."""

from __future__ import annotations

from typing import Any

import numpy as np

from opticam_rt.methods.cam_family import ChannelWeightCam
from opticam_rt.methods.contract import MethodContext
from opticam_rt.methods.record import Method


class GradCAMPlusPlus(ChannelWeightCam):
    name = "grad-cam++"

    def channel_weights(self, ctx: MethodContext, options: Any) -> np.ndarray:
        g = ctx.target_gradients()
        g2, g3 = g**2, g**3
        denom = 2 * g2 + ctx.features.sum(axis=(2, 3), keepdims=True) * g3
        safe = np.where(denom != 0, denom, 1.0)
        alpha = np.where(g != 0, g2 / safe, 0.0)
        return (alpha * np.maximum(g, 0)).sum(axis=(2, 3)).astype(np.float32)


def graph(eg: Any) -> str:
    b, a, g = eg.b, eg.features, eg.target_gradients()
    zero = b.const(0.0)
    g2 = b.op("Mul", [g, g])
    g3 = b.op("Mul", [g2, g])
    denom = b.op("Add", [b.op("Mul", [b.const(2.0), g2]), b.op("Mul", [b.reduce("ReduceSum", a, [2, 3], 1), g3])])
    safe = b.op("Where", [b.op("Not", [b.op("Equal", [denom, zero])]), denom, b.const(1.0)])
    alpha = b.op("Where", [b.op("Not", [b.op("Equal", [g, zero])]), b.op("Div", [g2, safe]), zero])
    weights = b.reduce("ReduceSum", b.op("Mul", [alpha, b.op("Relu", [g])]), [2, 3], 0)
    return eg.normalise(b.op("Relu", [eg.weighted_sum(weights)]))


def reference(clf: Any, images: Any, targets: Any, size: tuple[int, int]) -> dict[str, Any]:
    from opticam_rt.methods.torch_ops import F, target_gradients, torch, upsample_normalise

    a, g = target_gradients(clf, images, targets)
    g2, g3 = g**2, g**3
    denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
    weights = (alpha * F.relu(g)).sum(dim=(2, 3), keepdim=True)
    return {"maps": upsample_normalise(F.relu((weights * a).sum(1)), size)}


METHOD = Method(
    name="grad-cam++", host=GradCAMPlusPlus, reference=reference, graph=graph, cpu_order=("ov-cpu", "ort-cpu"),
    summary="Grad-CAM++: positive gradients weighted by second-order terms (one backward pass).",
)
