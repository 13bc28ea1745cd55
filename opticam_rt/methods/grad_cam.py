"""Grad-CAM (Selvaraju et al. 2017, eq. 1-2): channel weights are the spatial mean of the target
logit's gradient at the tapped layer; map = relu(sum_k w_k A_k)."""

from __future__ import annotations

from typing import Any

import numpy as np

from opticam_rt.methods.cam_family import ChannelWeightCam
from opticam_rt.methods.contract import MethodContext
from opticam_rt.methods.record import Method


class GradCAM(ChannelWeightCam):
    """w_k = mean_ij dy/dA_k,ij."""

    name = "grad-cam"

    def channel_weights(self, ctx: MethodContext, options: Any) -> np.ndarray:
        return ctx.target_gradients().mean(axis=(2, 3))


def graph(g: Any) -> str:
    """The map (N, H, W) in ONNX: ReduceMean of the gradient, weighted sum, Relu, upsample-normalise."""
    b = g.b
    return g.normalise(b.op("Relu", [g.weighted_sum(b.reduce("ReduceMean", g.target_gradients(), [2, 3], 0))]))


def reference(clf: Any, images: Any, targets: Any, size: tuple[int, int]) -> dict[str, Any]:
    from opticam_rt.methods.torch_ops import F, target_gradients, upsample_normalise

    a, grads = target_gradients(clf, images, targets)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    return {"maps": upsample_normalise(cam, size)}


METHOD = Method(
    name="grad-cam", host=GradCAM, reference=reference, graph=graph, cpu_order=("ov-cpu", "ort-cpu"),
    summary="Grad-CAM: channels weighted by their mean gradient (one backward pass).",
)
