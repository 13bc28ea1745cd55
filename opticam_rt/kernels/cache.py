"""What the Opti-CAM forward pass keeps for its adjoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class OpticamCache:
    """Forward-pass intermediates (NumPy or CuPy arrays, float32, all on one device).

    features  (N, K, h, w)  the feature maps A
    weights   (N, K)        w = softmax(u, axis=1)
    images    (N, C, H, W)  the images x that were masked
    upsampled (N, H, W)     S_up, the upsampled map before normalisation
    saliency  (N, H, W)     Sn = (S_up - smin) / (smax - smin + NORM_EPS)
    smin      (N,)          per-image min of S_up
    smax      (N,)          per-image max of S_up

    The arrays are references, not copies: do not modify the inputs between the forward
    call and the adjoint call.
    """

    features: Any
    weights: Any
    images: Any
    upsampled: Any
    saliency: Any
    smin: Any
    smax: Any
