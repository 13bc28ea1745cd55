"""XGrad-CAM (Fu et al. 2020, eq. 9): w_k = sum_ij A_k,ij g_k,ij / sum_ij A_k,ij."""

from __future__ import annotations

from typing import Any

import numpy as np

from opticam_rt.methods.cam_family import ChannelWeightCam
from opticam_rt.methods.contract import MethodContext
from opticam_rt.methods.record import Method

#: Keeps an all-zero channel's denominator away from 0.
EPS = 1e-7


class XGradCAM(ChannelWeightCam):
    name = "xgrad-cam"

    def channel_weights(self, ctx: MethodContext, options: Any) -> np.ndarray:
        g = ctx.target_gradients()
        a = ctx.features
        return ((a * g).sum(axis=(2, 3)) / (a.sum(axis=(2, 3)) + EPS)).astype(np.float32)


def graph(eg: Any) -> str:
    b, a, g = eg.b, eg.features, eg.target_gradients()
    num = b.reduce("ReduceSum", b.op("Mul", [a, g]), [2, 3], 0)
    weights = b.op("Div", [num, b.op("Add", [b.reduce("ReduceSum", a, [2, 3], 0), b.const(EPS)])])
    return eg.normalise(b.op("Relu", [eg.weighted_sum(weights)]))


def reference(clf: Any, images: Any, targets: Any, size: tuple[int, int]) -> dict[str, Any]:
    from opticam_rt.methods.torch_ops import F, target_gradients, upsample_normalise

    a, g = target_gradients(clf, images, targets)
    weights = (a * g).sum(dim=(2, 3), keepdim=True) / (a.sum(dim=(2, 3), keepdim=True) + 1e-7)
    return {"maps": upsample_normalise(F.relu((weights * a).sum(1)), size)}


METHOD = Method(
    name="xgrad-cam", host=XGradCAM, reference=reference, graph=graph, cpu_order=("ov-cpu", "ort-cpu"),
    summary="XGrad-CAM: gradients weighted by the activations they multiply (one backward pass).",
)
