"""What the PyTorch references share (autograd, F.interpolate): imported only inside a reference
function, so registering a method never imports torch.

Conventions follow the Opti-CAM paper (arXiv 2301.07002): bilinear upsampling with
align_corners=False, per-image min-max normalisation, masks applied in pixel space. ``clf`` is a
``reference.TorchClassifier``: ``logits(images)`` and ``logits_and_features(images, replace=A)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from opticam_rt.constants import NORM_EPS

__all__ = ["F", "torch", "upsample_normalise", "target_gradients"]


def upsample_normalise(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) -> (N, H, W): bilinear (align_corners=False), then per-image min-max to [0, 1]."""
    up = F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    return (up - lo) / (hi - lo + NORM_EPS)


def target_gradients(clf: Any, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features A (N, K, h, w) and d logit_target / d A, by autograd."""
    with torch.no_grad():
        _, features = clf.logits_and_features(images)
    features = features.detach().requires_grad_(True)
    logits, _ = clf.logits_and_features(images, replace=features)
    score = logits.gather(1, targets[:, None]).sum()
    (grads,) = torch.autograd.grad(score, features)
    return features.detach(), grads
