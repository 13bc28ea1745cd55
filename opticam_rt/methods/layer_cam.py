"""Layer-CAM (Jiang et al. 2021, eq. 4-5): per-location weights relu(g); map relu(sum_k relu(g) A)."""

from __future__ import annotations

from typing import Any

import numpy as np

from opticam_rt.methods.cam_family import class_map_to_saliency
from opticam_rt.methods.contract import CamMethod, MethodContext
from opticam_rt.methods.record import Method


class LayerCAM(CamMethod):
    name = "layer-cam"

    def saliency(self, ctx: MethodContext, options: Any) -> np.ndarray:
        g = ctx.target_gradients()
        cam = np.maximum((np.maximum(g, 0) * ctx.features).sum(axis=1), 0)
        return class_map_to_saliency(cam, ctx.images)


def graph(eg: Any) -> str:
    b, a, g = eg.b, eg.features, eg.target_gradients()
    return eg.normalise(b.op("Relu", [b.reduce("ReduceSum", b.op("Mul", [b.op("Relu", [g]), a]), [1], 0)]))


def reference(clf: Any, images: Any, targets: Any, size: tuple[int, int]) -> dict[str, Any]:
    from opticam_rt.methods.torch_ops import F, target_gradients, upsample_normalise

    a, g = target_gradients(clf, images, targets)
    return {"maps": upsample_normalise(F.relu((F.relu(g) * a).sum(1)), size)}


METHOD = Method(
    name="layer-cam", host=LayerCAM, reference=reference, graph=graph, cpu_order=("ov-cpu", "ort-cpu"),
    summary="Layer-CAM: activations weighted by their positive gradient at each location.",
)
