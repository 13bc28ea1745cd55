"""Every saliency method in plain PyTorch (autograd, F.interpolate, torch.optim.Adam).

These functions are the ``torch`` backend and the reference the ONNX Runtime path is tested
against. Conventions follow the Opti-CAM paper (arXiv 2301.07002): bilinear upsampling with
align_corners=False, per-image min-max normalisation, masks applied in pixel space.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from opticam_rt.constants import NORM_EPS
from opticam_rt.method_defaults import CHUNK
from opticam_rt.reference.model import TorchClassifier

Result = dict[str, torch.Tensor]

# Masked or ablated copies per PyTorch pass: the methods' own defaults (method_defaults.CHUNK).
# Score-CAM's 16 is also eager PyTorch's best batch here: EfficientNet-Lite0 on 2 cores costs
# 29 ms per image at batch 1 to 16, 48 at 32, 56 at 64 (the allocator's page faults).


def upsample_normalise(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) -> (N, H, W): bilinear (align_corners=False), then per-image min-max to [0, 1]."""
    up = F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    return (up - lo) / (hi - lo + NORM_EPS)


def _target_gradients(clf: TorchClassifier, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features A (N, K, h, w) and d logit_target / d A, by autograd."""
    with torch.no_grad():
        _, features = clf.logits_and_features(images)
    features = features.detach().requires_grad_(True)
    logits, _ = clf.logits_and_features(images, replace=features)
    score = logits.gather(1, targets[:, None]).sum()
    (grads,) = torch.autograd.grad(score, features)
    return features.detach(), grads


def grad_cam(clf: TorchClassifier, images: torch.Tensor, targets: torch.Tensor, size: tuple[int, int]) -> Result:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2): weights = spatial mean of gradients."""
    a, g = _target_gradients(clf, images, targets)
    cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    return {"maps": upsample_normalise(cam, size)}


def grad_cam_pp(clf: TorchClassifier, images: torch.Tensor, targets: torch.Tensor, size: tuple[int, int]) -> Result:
    """Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19 with the exponential's gradients as powers)."""
    a, g = _target_gradients(clf, images, targets)
    g2, g3 = g**2, g**3
    denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
    weights = (alpha * F.relu(g)).sum(dim=(2, 3), keepdim=True)
    return {"maps": upsample_normalise(F.relu((weights * a).sum(1)), size)}


def xgrad_cam(clf: TorchClassifier, images: torch.Tensor, targets: torch.Tensor, size: tuple[int, int]) -> Result:
    """XGrad-CAM (Fu et al. 2020, eq. 9): weights = sum(A * grad) / sum(A)."""
    a, g = _target_gradients(clf, images, targets)
    weights = (a * g).sum(dim=(2, 3), keepdim=True) / (a.sum(dim=(2, 3), keepdim=True) + 1e-7)
    return {"maps": upsample_normalise(F.relu((weights * a).sum(1)), size)}


def layer_cam(clf: TorchClassifier, images: torch.Tensor, targets: torch.Tensor, size: tuple[int, int]) -> Result:
    """Layer-CAM (Jiang et al. 2021, eq. 4-5): per-location weights relu(grad)."""
    a, g = _target_gradients(clf, images, targets)
    return {"maps": upsample_normalise(F.relu((F.relu(g) * a).sum(1)), size)}


def score_cam(
    clf: TorchClassifier, images: torch.Tensor, targets: torch.Tensor, size: tuple[int, int], chunk: int = CHUNK["score-cam"]
) -> Result:
    """Score-CAM (Wang et al. 2020, eq. 5-8): each upsampled, normalised channel masks the image;
    weights are the softmax of the target's masked probabilities over channels (as the authors' code)."""
    with torch.no_grad():
        _, a = clf.logits_and_features(images)
        n, k = a.shape[:2]
        probs = torch.empty(n, k)
        for i in range(n):
            for start in range(0, k, chunk):
                ch = a[i, start : start + chunk]
                masks = upsample_normalise(ch, size)
                p = torch.softmax(clf.logits(images[i : i + 1] * masks[:, None]), dim=1)
                probs[i, start : start + chunk] = p[:, targets[i]]
        weights = torch.softmax(probs, dim=1)[:, :, None, None]
        return {"maps": upsample_normalise(F.relu((weights * a).sum(1)), size)}


def ablation_cam(
    clf: TorchClassifier, images: torch.Tensor, targets: torch.Tensor, size: tuple[int, int], chunk: int = CHUNK["ablation-cam"]
) -> Result:
    """Ablation-CAM (Desai & Ramaswamy 2020, eq. 3): weight_k = (y - y_k) / y, y_k the target logit
    with channel k of the feature map set to zero."""
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
                out, _ = clf.logits_and_features(images[i : i + 1].expand(len(idx), -1, -1, -1), replace=ablated)
                weights[i, idx] = (y[i] - out[:, targets[i]]) / y[i]
        return {"maps": upsample_normalise(F.relu((weights[:, :, None, None] * a).sum(1)), size)}


def fake_cam(clf: TorchClassifier, images: torch.Tensor, targets: torch.Tensor, size: tuple[int, int]) -> Result:
    """Fake-CAM (Opti-CAM paper, sec. 5.2): ones everywhere except a zero at the top-left pixel."""
    maps = torch.ones(images.shape[0], *size)
    maps[:, 0, 0] = 0
    return {"maps": maps}


def opti_cam(
    clf: TorchClassifier,
    images: torch.Tensor,
    targets: torch.Tensor,
    size: tuple[int, int],
    iterations: int = 100,
    lr: float = 0.1,
    loss: str = "mask",
) -> Result:
    """Opti-CAM (Zhang et al. 2023, eq. 5-9): u (N, K) starts equal, w = softmax(u), the saliency
    S = norm(up(sum_k w_k A_k)) masks the image in pixel space, and Adam maximises the target
    logit of x * S ("mask") or minimises |f(x) - f(x * S)| ("diff")."""
    with torch.no_grad():
        logits, a = clf.logits_and_features(images)
    y = logits.gather(1, targets[:, None])[:, 0]
    u = torch.zeros(a.shape[:2], requires_grad=True)
    optimiser = torch.optim.Adam([u], lr=lr)
    trace = torch.empty(images.shape[0], iterations)

    def saliency(v: torch.Tensor) -> torch.Tensor:
        return upsample_normalise((torch.softmax(v, dim=1)[:, :, None, None] * a).sum(1), size)

    for step in range(iterations):
        optimiser.zero_grad()
        score = clf.logits(images * saliency(u).unsqueeze(1)).gather(1, targets[:, None])[:, 0]
        per_image = -score if loss == "mask" else (y - score).abs()
        per_image.sum().backward()
        optimiser.step()
        trace[:, step] = per_image.detach()
    with torch.no_grad():
        return {"maps": saliency(u), "u": u.detach(), "trace": trace}


REFERENCE_METHODS: dict[str, Callable[..., Result]] = {
    "opti-cam": opti_cam,
    "grad-cam": grad_cam,
    "grad-cam++": grad_cam_pp,
    "xgrad-cam": xgrad_cam,
    "layer-cam": layer_cam,
    "score-cam": score_cam,
    "ablation-cam": ablation_cam,
    "fake-cam": fake_cam,
}


def reference_explain(
    clf: TorchClassifier, images: torch.Tensor, targets: torch.Tensor, method: str, **options: object
) -> Result:
    """Run one reference method; adds ``scores`` and ``masked_scores`` (target softmax probabilities)."""
    size = (images.shape[2], images.shape[3])
    out = REFERENCE_METHODS[method](clf, images, targets, size, **options)
    with torch.no_grad():
        p = torch.softmax(clf.logits(images), 1).gather(1, targets[:, None])[:, 0]
        o = torch.softmax(clf.logits(images * out["maps"].unsqueeze(1)), 1).gather(1, targets[:, None])[:, 0]
    return {**out, "scores": p, "masked_scores": o}
