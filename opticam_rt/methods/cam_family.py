"""What the classic CAM family's host implementations share: the class map's upsample-normalise
and the channel-weighting pipeline (each method's module overrides one hook, ``channel_weights``
or ``saliency``, and cites the equation it implements).

Where libraries disagree we follow the Opti-CAM paper: the class map is rectified at feature
resolution, upsampled bilinearly with align_corners=False and min-max normalised per image;
masks are applied to pixels in [0, 1].
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from opticam_rt.kernels import saliency_and_mask
from opticam_rt.methods.contract import CamMethod, MethodContext


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
