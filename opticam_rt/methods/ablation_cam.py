"""Ablation-CAM (Desai & Ramaswamy 2020, eq. 3): w_k = (y - y_k) / y, y_k the target logit when
channel k of the feature map is zeroed (the head graph runs on ablated features)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import TensorProto

from opticam_rt.method_defaults import CHUNK
from opticam_rt.methods.cam_family import ChannelWeightCam
from opticam_rt.methods.contract import MethodContext
from opticam_rt.methods.graph.channel_loop import chunk_size, loop_over_channels
from opticam_rt.methods.options import MethodOptions, option
from opticam_rt.methods.record import Method


@dataclass(frozen=True)
class AblationCAMOptions(MethodOptions):
    chunk: int = option(CHUNK["ablation-cam"], "Channels per network pass (memory vs speed).", low=1, high=65536)


class AblationCAM(ChannelWeightCam):
    name = "ablation-cam"
    Options = AblationCAMOptions

    def channel_weights(self, ctx: MethodContext, options: AblationCAMOptions) -> np.ndarray:
        n, k = ctx.features.shape[:2]
        chunk = options.chunk
        y = ctx.logits[np.arange(n), ctx.targets]
        weights = np.empty((n, k), dtype=np.float32)
        for i in range(n):
            for start in range(0, k, chunk):
                idx = np.arange(start, min(start + chunk, k))
                ablated = np.repeat(ctx.features[i : i + 1], len(idx), axis=0)
                ablated[np.arange(len(idx)), idx] = 0
                out = ctx.runner.infer("head", {"features": ablated})["logits"]
                weights[i, idx] = (y[i] - out[:, ctx.targets[i]]) / y[i]
                if ctx.progress:
                    ctx.progress(len(idx))
        return weights


def graph(eg: Any) -> str:
    """A Loop over chunks of channels; copy j of a chunk has channel start + j zeroed (indices
    past K zero nothing, and their results are cut off)."""
    b, k = eg.b, eg.s.channels
    chunk = chunk_size(eg)
    fh, fw = eg.s.feature_size

    def ablated_logits(body: Any, eg: Any, start: str, chunk: str) -> str:
        idx = body.op("Range", [start, body.op("Add", [start, chunk]), body.const(1, np.int64)])  # (c,)
        zeroed = body.op("Equal", [body.unsqueeze(idx, [1]), body.const(np.arange(k)[None, :], np.int64)])  # (c, K)
        keep = body.op("Cast", [body.op("Not", [zeroed])], to=TensorProto.FLOAT)
        # (N, 1, K, h, w) * (1, c, K, 1, 1) -> (N, c, K, h, w)
        ablated = body.op("Mul", [body.unsqueeze(eg.features, [1]), body.unsqueeze(keep, [0, 3, 4])])
        flat = body.op("Reshape", [ablated, body.const([-1, k, fh, fw], np.int64)])
        return body.inline(eg.g["head"], {"features": flat})["logits"]

    results = loop_over_channels(eg, chunk, ablated_logits, "ablation_cam")
    y = b.unsqueeze(b.pick(eg.logits, eg.index), [1])
    weights = b.op("Div", [b.op("Sub", [y, results]), y])
    return eg.normalise(b.op("Relu", [eg.weighted_sum(weights)]))


def reference(
    clf: Any, images: Any, targets: Any, size: tuple[int, int], chunk: int = CHUNK["ablation-cam"]
) -> dict[str, Any]:
    from opticam_rt.methods.torch_ops import F, torch, upsample_normalise

    with torch.no_grad():
        logits, a = clf.logits_and_features(images)
        n, k = a.shape[:2]
        y = logits.gather(1, targets[:, None])[:, 0]
        weights = torch.empty(n, k)
        for i in range(n):
            for start in range(0, k, chunk):
                idx = torch.arange(start, min(start + chunk, k))
                ablated = a[i : i + 1].repeat(len(idx), 1, 1, 1)
                ablated[torch.arange(len(idx)), idx] = 0
                out = clf.logits_from_tap(images[i : i + 1], ablated)
                weights[i, idx] = (y[i] - out[:, targets[i]]) / y[i]
        return {"maps": upsample_normalise(F.relu((weights[:, :, None, None] * a).sum(1)), size)}


METHOD = Method(
    name="ablation-cam", host=AblationCAM, reference=reference, graph=graph, cpu_order=("ort-cpu", "ov-cpu"),
    summary="Ablation-CAM: channels weighted by the score drop when each is zeroed (K head passes).",
    graph_options={"chunk": None},
)
