"""Fake-CAM (Opti-CAM paper, sec. 5.2): ones everywhere but a zero at the top-left pixel. It keeps
the image almost intact, so average drop is near zero: the paper's argument that AD/AI alone can
be gamed and average gain is needed."""

from __future__ import annotations

from typing import Any

import numpy as np

from opticam_rt.methods.contract import CamMethod, MethodContext
from opticam_rt.methods.record import Method


class FakeCAM(CamMethod):
    name = "fake-cam"

    def saliency(self, ctx: MethodContext, options: Any) -> np.ndarray:
        n, _, h, w = ctx.images.shape
        maps = np.ones((n, h, w), dtype=np.float32)
        maps[:, 0, 0] = 0
        return maps


def graph(eg: Any) -> str:
    """The map itself (N, H, W), not a class map: nothing to upsample or normalise."""
    b = eg.b
    h, w = eg.s.input_size
    pattern = np.ones((1, h, w), dtype=np.float32)
    pattern[0, 0, 0] = 0
    batch = b.op("Slice", [b.op("Shape", ["image"]), b.const([0], np.int64), b.const([1], np.int64)])
    shape = b.op("Concat", [batch, b.const([h, w], np.int64)], axis=0)
    return b.op("Expand", [b.const(pattern, hint="fake_cam"), shape])


def reference(clf: Any, images: Any, targets: Any, size: tuple[int, int]) -> dict[str, Any]:
    from opticam_rt.methods.torch_ops import torch

    maps = torch.ones(images.shape[0], *size)
    maps[:, 0, 0] = 0
    return {"maps": maps}


METHOD = Method(
    name="fake-cam", host=FakeCAM, reference=reference, graph=graph, cpu_order=("ort-cpu", "ov-cpu"),
    summary="Fake-CAM: the paper's all-ones baseline that games average drop.", graph_options={},
)
