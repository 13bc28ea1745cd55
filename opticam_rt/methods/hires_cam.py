"""HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations of
convolutional neural networks", eq. 4): the element-wise product of the target logit's gradient
and the feature map, summed over channels: map = relu(sum_k g_k * A_k). Unlike Grad-CAM, the
gradient is not averaged over space first, so each location keeps its own weight; unlike
Layer-CAM, negative gradients are kept."""

from __future__ import annotations

from typing import Any

import numpy as np

from opticam_rt.methods.cam_family import class_map_to_saliency
from opticam_rt.methods.contract import CamMethod, MethodContext
from opticam_rt.methods.record import Method


class HiResCAM(CamMethod):
    name = "hires-cam"

    def saliency(self, ctx: MethodContext, options: Any) -> np.ndarray:
        cam = np.maximum((ctx.target_gradients() * ctx.features).sum(axis=1), 0)
        return class_map_to_saliency(cam, ctx.images)


def graph(eg: Any) -> str:
    b = eg.b
    product = b.op("Mul", [eg.target_gradients(), eg.features])
    return eg.normalise(b.op("Relu", [b.reduce("ReduceSum", product, [1], 0)]))


def reference(clf: Any, images: Any, targets: Any, size: tuple[int, int]) -> dict[str, Any]:
    """From the paper: the gradient of the class score w.r.t. the feature map, times the map."""
    from opticam_rt.methods.torch_ops import F, target_gradients, upsample_normalise

    a, grads = target_gradients(clf, images, targets)
    return {"maps": upsample_normalise(F.relu((grads * a).sum(dim=1)), size)}


METHOD = Method(
    name="hires-cam", host=HiResCAM, reference=reference, graph=graph, cpu_order=("ov-cpu", "ort-cpu"),
    summary="HiResCAM: gradient times activation at every location, summed over channels.",
)
