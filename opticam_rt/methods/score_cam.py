"""Score-CAM (Wang et al. 2020, eq. 5-8): channel k's upsampled, normalised map masks the image;
w = softmax over k of the target's softmax probability on those K masked copies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from opticam_rt.kernels import scorecam_masked_copies
from opticam_rt.method_defaults import CHUNK
from opticam_rt.methods.cam_family import ChannelWeightCam, softmax
from opticam_rt.methods.contract import MethodContext
from opticam_rt.methods.graph.channel_loop import chunk_size, loop_over_channels, padded_channels
from opticam_rt.methods.options import MethodOptions, option
from opticam_rt.methods.record import Method


@dataclass(frozen=True)
class ScoreCAMOptions(MethodOptions):
    chunk: int = option(CHUNK["score-cam"], "Channels per network pass (memory vs speed).", low=1, high=65536)


class ScoreCAM(ChannelWeightCam):
    """The masked copies come straight out of the Score-CAM kernel, ``chunk`` at a time, through
    the forward graph."""

    name = "score-cam"
    Options = ScoreCAMOptions

    def channel_weights(self, ctx: MethodContext, options: ScoreCAMOptions) -> np.ndarray:
        n, k = ctx.features.shape[:2]
        chunk = options.chunk
        probs = np.empty((n, k), dtype=np.float32)
        for i in range(n):
            for start in range(0, k, chunk):
                channels = slice(start, min(start + chunk, k))
                copies = scorecam_masked_copies(ctx.features[i : i + 1], ctx.images[i : i + 1], channels=channels)
                logits = ctx.runner.infer("forward", {"image": copies})["logits"]
                probs[i, channels] = softmax(logits)[:, ctx.targets[i]]
                if ctx.progress:
                    ctx.progress(channels.stop - channels.start)
        return softmax(probs, axis=1)


def graph(eg: Any) -> str:
    """A Loop over chunks of channels; padding channels past K are zero maps, cut off after."""
    b = eg.b
    chunk = chunk_size(eg)
    source = padded_channels(eg, chunk)
    h, w = eg.s.input_size

    def probabilities(body: Any, eg: Any, start: str, chunk: str) -> str:
        stop = body.op("Add", [start, chunk])
        channels = body.op("Slice", [source, body.unsqueeze(start, [0]), body.unsqueeze(stop, [0]), body.const([1], np.int64)])
        maps = eg.normalise(channels, body)  # (N, c, H, W)
        copies = body.op("Mul", [body.unsqueeze("image", [1]), body.unsqueeze(maps, [2])])  # (N, c, 3, H, W)
        flat = body.op("Reshape", [copies, body.const([-1, 3, h, w], np.int64)])
        return body.op("Softmax", [body.inline(eg.g["forward"], {"image": flat})["logits"]], axis=1)

    probs = loop_over_channels(eg, chunk, probabilities, "score_cam")
    return eg.normalise(b.op("Relu", [eg.weighted_sum(b.op("Softmax", [probs], axis=1))]))


def reference(clf: Any, images: Any, targets: Any, size: tuple[int, int], chunk: int = CHUNK["score-cam"]) -> dict[str, Any]:
    """Weights: the softmax over channels of the target's masked probabilities (as the authors' code)."""
    from opticam_rt.methods.torch_ops import F, torch, upsample_normalise

    with torch.no_grad():
        _, a = clf.logits_and_features(images)
        n, k = a.shape[:2]
        probs = torch.empty(n, k)
        for i in range(n):
            for start in range(0, k, chunk):
                masks = upsample_normalise(a[i, start : start + chunk], size)
                p = torch.softmax(clf.logits(images[i : i + 1] * masks[:, None]), dim=1)
                probs[i, start : start + chunk] = p[:, targets[i]]
        weights = torch.softmax(probs, dim=1)[:, :, None, None]
        return {"maps": upsample_normalise(F.relu((weights * a).sum(1)), size)}


METHOD = Method(
    name="score-cam", host=ScoreCAM, reference=reference, graph=graph, cpu_order=("ort-cpu", "ov-cpu"),
    summary="Score-CAM: channels weighted by the class score of the image they mask (K forward passes).",
    graph_options={"chunk": None},
)
