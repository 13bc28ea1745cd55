"""Opti-CAM in plain PyTorch (Zhang et al. 2023, eq. 5-9): autograd and torch.optim.Adam."""

from __future__ import annotations

from typing import Any

from opticam_rt.method_defaults import OPTI_CAM


def reference(
    clf: Any,
    images: Any,
    targets: Any,
    size: tuple[int, int],
    iterations: int = OPTI_CAM["iterations"],
    lr: float = OPTI_CAM["lr"],
    loss: str = "mask",
) -> dict[str, Any]:
    """u (N, K) starts equal, w = softmax(u), the saliency S = norm(up(sum_k w_k A_k)) masks the
    image in pixel space, and Adam maximises the target logit of x * S ("mask") or minimises
    |f(x) - f(x * S)| ("diff")."""
    from opticam_rt.methods.torch_ops import torch, upsample_normalise

    with torch.no_grad():
        logits, a = clf.logits_and_features(images)
    y = logits.gather(1, targets[:, None])[:, 0]
    u = torch.zeros(a.shape[:2], requires_grad=True)
    optimiser = torch.optim.Adam([u], lr=lr)
    trace = torch.empty(images.shape[0], iterations)

    def saliency(v: Any) -> Any:
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
