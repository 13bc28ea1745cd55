"""Run any method's PyTorch reference (its registration's ``reference``) with the scores beside it."""

from __future__ import annotations

import torch

from opticam_rt.methods import method_record
from opticam_rt.reference.model import TorchClassifier

Result = dict[str, torch.Tensor]


def reference_explain(
    clf: TorchClassifier, images: torch.Tensor, targets: torch.Tensor, method: str, **options: object
) -> Result:
    """images (N, 3, H, W), targets (N,) -> the reference's outputs plus ``scores`` and
    ``masked_scores`` (N,), the target's softmax probability on x and on x * map."""
    size = (images.shape[2], images.shape[3])
    out = method_record(method).reference(clf, images, targets, size, **options)
    with torch.no_grad():
        p = torch.softmax(clf.logits(images), 1).gather(1, targets[:, None])[:, 0]
        o = torch.softmax(clf.logits(images * out["maps"].unsqueeze(1)), 1).gather(1, targets[:, None])[:, 0]
    return {**out, "scores": p, "masked_scores": o}
