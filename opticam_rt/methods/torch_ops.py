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

__all__ = ["F", "conceptor_refine", "torch", "upsample_normalise", "target_gradients"]


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


def conceptor_refine(clf: Any, images: torch.Tensor, maps: torch.Tensor, size: tuple[int, int], aperture: float,
                     combine: str, delta: float) -> torch.Tensor:
    """Conceptor-CAM's refinement of base maps (N, H, W), in float64 (methods/conceptor.py says what).

    The pooling to the feature grid is autograd's adjoint of F.interpolate; conceptors by
    torch.linalg.solve. -> maps (N, H, W) float32 in [0, 1].
    """
    with torch.no_grad():
        _, a = clf.logits_and_features(images)
    a = a.double()
    n, k, h, w = a.shape

    def adjoint(field: torch.Tensor) -> torch.Tensor:
        cells = torch.zeros(field.shape[0], 1, h, w, dtype=torch.float64, requires_grad=True)
        up = F.interpolate(cells, size=size, mode="bilinear", align_corners=False)[:, 0]
        (grad,) = torch.autograd.grad((up * field).sum(), cells)
        return grad[:, 0]

    s = (adjoint(maps.double()) / adjoint(torch.ones(1, *size, dtype=torch.float64))).reshape(n, h * w)
    eye = torch.eye(k, dtype=torch.float64)

    def conceptor(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        r = (x * weights) @ x.T / weights.sum().clamp_min(1e-12)
        r = r / (torch.trace(r) / k).clamp_min(1e-12)
        return torch.linalg.solve(r + eye / aperture**2, r).T  # R (R + a^-2 I)^-1, both symmetric

    def regular(c: torch.Tensor) -> torch.Tensor:
        return (1 - delta) * c + delta * eye

    cams = []
    for i in range(n):
        x = a[i].reshape(k, h * w)
        c = conceptor(s[i], x)
        if combine == "and-not":
            c = torch.linalg.inv(torch.linalg.inv(regular(c)) + torch.linalg.inv(regular(eye - conceptor(1 - s[i], x))) - eye)
        energy = (x * (c @ x)).sum(0) / ((x * x).sum(0) + 1e-12)
        cams.append(F.relu(energy * s[i]).reshape(h, w))
    return upsample_normalise(torch.stack(cams), size).float()
