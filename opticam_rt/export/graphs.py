"""The PyTorch functions each exported graph computes: forward, gradients, head and Opti-CAM step.

Every function takes pixel-space images (N, 3, H, W) in [0, 1]; the model's mean/std
normalisation happens inside, so the exported graphs take pixels too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from opticam_rt.constants import NORM_EPS
from opticam_rt.export.tap import TapSpec, tapped


def interpolation_matrix(out_size: int, in_size: int) -> torch.Tensor:
    """Bilinear (align_corners=False) resize along one axis as a matrix (out_size, in_size).

    Built by resizing the identity with ``F.interpolate``, so ``U_h @ S @ U_w.T`` equals
    ``F.interpolate(S, mode="bilinear", align_corners=False)`` and its backward is a MatMul.
    """
    eye = torch.eye(in_size, dtype=torch.float32).reshape(1, 1, in_size, in_size)
    return F.interpolate(eye, size=(out_size, in_size), mode="bilinear", align_corners=False)[0, 0]


@dataclass(frozen=True)
class Preprocessing:
    """Per-channel ``(x - mean) / std`` on pixels in [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=image.dtype).reshape(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=image.dtype).reshape(1, -1, 1, 1)
        return (image - mean) / std


class ExplainerGraphs:
    """The five computations of a bundle, as plain functions of tensors.

    Args:
        model: the classifier in eval mode with frozen parameters.
        tap: the resolved tap (call index set).
        preprocessing: applied to pixels before the model.
        input_size: (H, W).
        feature_size: (h, w) of the tap output.
    """

    def __init__(
        self,
        model: nn.Module,
        tap: TapSpec,
        preprocessing: Preprocessing,
        input_size: tuple[int, int],
        feature_size: tuple[int, int],
    ) -> None:
        self.model = model
        self.tap = tap
        self.preprocessing = preprocessing
        self.input_size = input_size
        self.feature_size = feature_size
        self.upsample_h = interpolation_matrix(input_size[0], feature_size[0])
        self.upsample_w = interpolation_matrix(input_size[1], feature_size[1])

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels -> (N, C) logits."""
        return self.model(self.preprocessing.apply(image))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (N, 3, H, W) -> logits (N, C), features (N, K, h, w)."""
        with tapped(self.model, self.tap) as captured:
            logits = self.logits(image)
        return logits, captured[0]

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """features (N, K, h, w) -> logits (N, C): the network after the tap.

        The part before the tap runs on a dummy image whose result is replaced, so it is
        dead code and tracing drops it.
        """
        dummy = features.new_zeros((features.shape[0], 3, *self.input_size))
        with tapped(self.model, self.tap, replace=features):
            return self.logits(dummy)

    def grad_features(self, image: torch.Tensor, cotangent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(image (N, 3, H, W), cotangent (N, C)) -> logits, features, d(sum cotangent*logits)/d features."""
        _, features = self.forward(image)

        def score(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            with tapped(self.model, self.tap, replace=f):
                logits = self.logits(image)
            return (logits * cotangent).sum(), logits

        grad, logits = torch.func.grad(score, has_aux=True)(features)
        return logits, features, grad

    def grad_image(self, image: torch.Tensor, cotangent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(image (N, 3, H, W), cotangent (N, C)) -> logits, d(sum cotangent*logits)/d image."""

        def score(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.logits(x)
            return (logits * cotangent).sum(), logits

        grad, logits = torch.func.grad(score, has_aux=True)(image)
        return logits, grad

    def saliency(self, features: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Opti-CAM's map: features (N, K, h, w), u (N, K) -> (N, H, W) in [0, 1].

        softmax(u) weights, channel sum, bilinear upsample (align_corners=False, as matrices),
        per-image min-max normalisation with ``NORM_EPS``.
        """
        weights = torch.softmax(u, dim=1)
        low = torch.einsum("nk,nkhw->nhw", weights, features)
        uh = self.upsample_h.to(features.dtype)
        uw = self.upsample_w.to(features.dtype)
        up = torch.matmul(torch.matmul(uh, low), uw.transpose(0, 1))
        lo = torch.amin(up, dim=(1, 2), keepdim=True)
        hi = torch.amax(up, dim=(1, 2), keepdim=True)
        return (up - lo) / (hi - lo + NORM_EPS)

    def opticam_step(
        self, image: torch.Tensor, features: torch.Tensor, u: torch.Tensor, cotangent: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One Opti-CAM objective evaluation and its gradient.

        (image (N, 3, H, W), features (N, K, h, w), u (N, K), cotangent (N, C)) ->
        score (N,) = sum_c cotangent * logits(image * saliency), grad_u (N, K) = d score_n / d u_n.
        Images are independent in eval mode, so the gradient of the summed score is per image.
        """

        def objective(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            masked = image * self.saliency(features, v).unsqueeze(1)
            score = (self.logits(masked) * cotangent).sum(dim=1)
            return score.sum(), score

        grad, score = torch.func.grad(objective, has_aux=True)(u)
        return score, grad

    def to_float64(self) -> "ExplainerGraphs":
        """A float64 copy: the accuracy reference float32 runtimes are judged against."""
        import copy

        # Parameters go straight to float64 through the copy's memo: no float32 copy in between
        # (VGG-16: 0.55 GB less at the verification peak).
        memo = {id(p): nn.Parameter(p.detach().double(), requires_grad=False) for p in self.model.parameters()}
        model = copy.deepcopy(self.model, memo).double()
        return ExplainerGraphs(model, self.tap, self.preprocessing, self.input_size, self.feature_size)
