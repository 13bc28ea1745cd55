"""The classic CAM family over a runner: one small class per method, sharing the pipeline.

Each class overrides one hook (``channel_weights`` or ``saliency``) and cites the equation it
implements. Where libraries disagree we follow the Opti-CAM paper: the class map is rectified
at feature resolution, upsampled bilinearly with align_corners=False and min-max normalised
per image; masks are applied to pixels in [0, 1].
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from opticam_rt.method_defaults import CHUNK
from opticam_rt.kernels import saliency_and_mask, scorecam_masked_copies
from opticam_rt.runtime.method import CamMethod, MethodContext
from opticam_rt.runtime.options import MethodOptions, option


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def class_map_to_saliency(cam: np.ndarray, images: np.ndarray) -> np.ndarray:
    """cam (N, h, w) -> saliency (N, H, W): upsample and min-max normalise (kernel path)."""
    ones = np.ones((cam.shape[0], 1), dtype=np.float32)
    maps, _ = saliency_and_mask(np.ascontiguousarray(cam[:, None], dtype=np.float32), ones, images)
    return maps


class ChannelWeightCam(CamMethod):
    """saliency = norm(up(relu(sum_k w_k A_k))); subclasses give the weights w (N, K)."""

    @abstractmethod
    def channel_weights(self, ctx: MethodContext, options: Any) -> np.ndarray:
        """-> weights (N, K)."""

    def saliency(self, ctx: MethodContext, options: Any) -> np.ndarray:
        weights = self.channel_weights(ctx, options)
        cam = np.maximum(np.einsum("nk,nkhw->nhw", weights, ctx.features), 0)
        return class_map_to_saliency(cam, ctx.images)


class GradCAM(ChannelWeightCam):
    """Grad-CAM (Selvaraju et al. 2017, eq. 1): w_k = mean_ij dy/dA_k,ij."""

    name = "grad-cam"

    def channel_weights(self, ctx: MethodContext, options: Any) -> np.ndarray:
        return ctx.target_gradients().mean(axis=(2, 3))


class GradCAMPlusPlus(ChannelWeightCam):
    """Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19), with the exponential's higher-order
    gradients written as powers of the first, as the authors' code does:
    alpha = g^2 / (2 g^2 + sum_ij A * g^3), w_k = sum_ij alpha * relu(g)."""

    name = "grad-cam++"

    def channel_weights(self, ctx: MethodContext, options: Any) -> np.ndarray:
        g = ctx.target_gradients()
        g2, g3 = g**2, g**3
        denom = 2 * g2 + ctx.features.sum(axis=(2, 3), keepdims=True) * g3
        safe = np.where(denom != 0, denom, 1.0)
        alpha = np.where(g != 0, g2 / safe, 0.0)
        return (alpha * np.maximum(g, 0)).sum(axis=(2, 3)).astype(np.float32)


class XGradCAM(ChannelWeightCam):
    """XGrad-CAM (Fu et al. 2020, eq. 9): w_k = sum_ij A_k,ij g_k,ij / sum_ij A_k,ij."""

    name = "xgrad-cam"

    def channel_weights(self, ctx: MethodContext, options: Any) -> np.ndarray:
        g = ctx.target_gradients()
        a = ctx.features
        return ((a * g).sum(axis=(2, 3)) / (a.sum(axis=(2, 3)) + 1e-7)).astype(np.float32)


class LayerCAM(CamMethod):
    """Layer-CAM (Jiang et al. 2021, eq. 4-5): per-location weights relu(g), map relu(sum_k relu(g) A)."""

    name = "layer-cam"

    def saliency(self, ctx: MethodContext, options: Any) -> np.ndarray:
        g = ctx.target_gradients()
        cam = np.maximum((np.maximum(g, 0) * ctx.features).sum(axis=1), 0)
        return class_map_to_saliency(cam, ctx.images)


@dataclass(frozen=True)
class ScoreCAMOptions(MethodOptions):
    chunk: int = option(CHUNK["score-cam"], "Channels per network pass (memory vs speed).", low=1, high=65536)


@dataclass(frozen=True)
class AblationCAMOptions(MethodOptions):
    chunk: int = option(CHUNK["ablation-cam"], "Channels per network pass (memory vs speed).", low=1, high=65536)


class ScoreCAM(ChannelWeightCam):
    """Score-CAM (Wang et al. 2020, eq. 5-8): channel k's upsampled, normalised map masks the image;
    w = softmax over k of the target's softmax probability on those K masked copies. The copies
    come straight out of the Score-CAM kernel, ``chunk`` at a time, through the forward graph."""

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


class AblationCAM(ChannelWeightCam):
    """Ablation-CAM (Desai & Ramaswamy 2020, eq. 3): w_k = (y - y_k) / y, y_k the target logit
    when channel k of the feature map is zeroed (the head graph runs on ablated features)."""

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


class FakeCAM(CamMethod):
    """Fake-CAM (Opti-CAM paper, sec. 5.2): ones everywhere but a zero at the top-left pixel.
    It keeps the image almost intact, so average drop is near zero: the paper's argument that
    AD/AI alone can be gamed and average gain is needed."""

    name = "fake-cam"

    def saliency(self, ctx: MethodContext, options: Any) -> np.ndarray:
        n, _, h, w = ctx.images.shape
        maps = np.ones((n, h, w), dtype=np.float32)
        maps[:, 0, 0] = 0
        return maps
