"""The interpretable-gradients loss (Torres Figueroa et al., "A Learning Paradigm for
Interpretable Gradients", arXiv 2404.15024).

    L = CE(f(x), t) + lambda * mean_i (1 - cos(d_i, d*_i))

with ``d_i`` the gradient of image i's target logit with respect to the image by ordinary
backpropagation and ``d*_i`` the same gradient by guided backpropagation. Minimising L by
gradient descent differentiates ``d_i`` with respect to the parameters: double backpropagation
(``create_graph=True``). The paper's ablation picked the cosine distance and lambda = 7.5e-3.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from opticam_rt.training.guided import guided_relus

#: The paper's lambda for the cosine regulariser.
DEFAULT_LAMBDA = 7.5e-3


class InterpretableGradientsLoss(NamedTuple):
    """The total loss and its parts (``cross_entropy`` and ``regulariser`` are detached)."""

    loss: torch.Tensor
    cross_entropy: torch.Tensor
    regulariser: torch.Tensor
    logits: torch.Tensor


def input_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                   guided: bool = False, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, d logit_label / d images) for a batch; ``guided`` runs the model under
    :func:`guided_relus`. ``images`` is not modified; the gradient is taken on a leaf copy."""
    x = images.detach().requires_grad_(True)
    if guided:
        with guided_relus():
            logits = model(x)
    else:
        logits = model(x)
    score = logits.gather(1, labels[:, None]).sum()
    (grad,) = torch.autograd.grad(score, x, create_graph=create_graph)
    return logits, grad


def _cosine(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-image cosine similarity of two (N, ...) tensors; a zero vector gives 0."""
    a, b = a.flatten(1), b.flatten(1)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(eps)


@contextlib.contextmanager
def _frozen_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """Give every BatchNorm scratch copies of its running statistics for the block and put the
    originals back on exit: the guided pass is a second forward of the same batch and must not
    count twice in the model's statistics. The originals are swapped, not written back in
    place, because the ordinary pass's backward may hold them."""
    saved = [(m, dict(m._buffers)) for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)]
    try:
        for m, buffers in saved:
            for k, v in buffers.items():
                if v is not None:
                    m._buffers[k] = v.clone()
        yield
    finally:
        for m, buffers in saved:
            m._buffers.update(buffers)


def interpretable_gradients_loss(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    lam: float = DEFAULT_LAMBDA,
    *,
    detach_guided: bool = True,
    eps: float = 1e-12,
    return_parts: bool = False,
) -> torch.Tensor | InterpretableGradientsLoss:
    """Cross-entropy plus ``lam`` * (1 - cosine(input gradient, guided input gradient)).

    Args:
        model: images (N, C, H, W) -> logits (N, classes); any ``nn.Module`` whose nonlinearities
            include ReLU-like ones (see :mod:`opticam_rt.training.guided`); it is not modified.
        images: the batch, as the model takes it.
        labels: (N,) class indices; both gradients are of each image's label logit.
        lam: the regulariser's weight (the paper's 7.5e-3 by default); 0 gives plain
            cross-entropy and skips the gradient passes.
        detach_guided: treat the guided gradient as the target (no gradient flows through it,
            the default) or differentiate both sides of the cosine.
        eps: floor of the norms' product in the cosine.
        return_parts: return an :class:`InterpretableGradientsLoss` instead of the loss alone.

    Returns:
        The loss, a scalar differentiable w.r.t. the parameters (by double backpropagation);
        with ``return_parts``, also ``cross_entropy`` and ``regulariser`` (mean 1 - cos, both
        detached) and the logits of the ordinary pass.
    """
    if images.dim() < 2 or labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape (N,) for images of batch N; got images {tuple(images.shape)}, "
                         f"labels {tuple(labels.shape)}")
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    labels = labels.long()
    if lam == 0:
        logits = model(images)
        ce = F.cross_entropy(logits, labels)
        parts = InterpretableGradientsLoss(ce, ce.detach(), torch.zeros((), dtype=ce.dtype), logits)
        return parts if return_parts else ce
    logits, grad = input_gradient(model, images, labels, create_graph=True)
    with _frozen_batchnorm_statistics(model):
        _, guided = input_gradient(model, images, labels, guided=True, create_graph=not detach_guided)
    if detach_guided:
        guided = guided.detach()
    ce = F.cross_entropy(logits, labels)
    reg = (1 - _cosine(grad, guided, eps)).mean()
    parts = InterpretableGradientsLoss(ce + lam * reg, ce.detach(), reg.detach(), logits)
    return parts if return_parts else parts.loss
