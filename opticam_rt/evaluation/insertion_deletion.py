"""Insertion and deletion curves and their AUC (RISE protocol, Petsiuk et al. 2018).

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018, Section 4.1 ("Evaluation metrics: deletion and insertion"):

* Pixels are ranked by saliency, most salient first. Ties are broken by raster order
  (row-major index), using a stable sort, so the ranking is deterministic.
* **Deletion** starts from the image and, step by step, sets the next ``pixels_per_step``
  pixels (all three channels) to black (0). A good map makes the score fall fast: lower
  AUC is better.
* **Insertion** starts from a blurred copy of the image and, step by step, copies the next
  ``pixels_per_step`` pixels back from the original. A good map makes the score rise fast:
  higher AUC is better.
* The score is the softmax probability of the target class. The Opti-CAM paper (Section
  5.3.2) uses the *predicted* class; pass the top-1 classes as ``targets`` to reproduce it.
* The curve holds the score before any step and after each of ``steps`` steps, so it has
  ``steps + 1`` values; its AUC is the trapezoid rule over x in [0, 1], i.e.
  ``np.trapezoid(curve, dx=1 / steps)`` (the same as RISE's ``auc``).

Defaults follow the Opti-CAM paper: 224 steps of 224 pixels at 224 x 224; in general
``pixels_per_step = ceil(H * W / steps)`` so that the last step reaches every pixel.

The blur is a normalised, truncated, separable Gaussian, 11 x 11 with sigma 5 as in RISE,
applied per channel with **reflect** padding (mirror without repeating the edge pixel,
NumPy's ``mode="reflect"``, PyTorch's ``"reflect"``). RISE itself convolves with zero
padding, which darkens a 5-pixel border of the blurred image; reflect padding keeps the
blurred image's border at the image's own brightness.

Every perturbed image of every step of every image goes through ``predict_proba``, at most
``batch_size`` at a time; the perturbed images are generated lazily, one batch at a time,
so memory stays bounded (8 images x 225 steps x 3 x 224 x 224 float32 would be 1 GB).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal, NamedTuple

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.evaluation._checks import (
    PredictProba,
    Progress,
    batched_scores,
    check_images,
    check_maps,
    check_positive_int,
    check_targets,
)

__all__ = [
    "CurveResult",
    "auc",
    "deletion",
    "gaussian_blur",
    "gaussian_kernel",
    "insertion",
    "perturbation_curves",
    "saliency_order",
]

Mode = Literal["insertion", "deletion"]


class CurveResult(NamedTuple):
    """Per-image curves and areas under them.

    ``curves``: (N, steps + 1) float64, the target-class probability after 0, 1, ..., steps
    steps. ``aucs``: (N,) float64, trapezoid AUC of each curve over x in [0, 1].
    """

    curves: np.ndarray
    aucs: np.ndarray


def gaussian_kernel(size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """1-D Gaussian weights of odd length ``size``, normalised to sum 1; (size,) float64.

    The 2-D kernel is the outer product of this with itself (separable blur).
    """
    size = check_positive_int(size, "kernel size")
    if size % 2 == 0:
        raise InputError(f"the blur kernel size must be odd, got {size}")
    if not (sigma > 0):
        raise InputError(f"the blur sigma must be positive, got {sigma}")
    r = np.arange(size, dtype=np.float64) - size // 2
    k = np.exp(-0.5 * (r / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(images: np.ndarray, size: int = 11, sigma: float = 5.0) -> np.ndarray:
    """Gaussian-blur each channel with reflect padding; (..., H, W) -> same shape, float32.

    Separable: a horizontal then a vertical 1-D pass with :func:`gaussian_kernel`.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim < 2:
        raise InputError(f"gaussian_blur needs at least 2 dimensions (H, W), got {x.shape}")
    k = gaussian_kernel(size, sigma)
    half = size // 2
    for axis in (-1, -2):
        pad = [(0, 0)] * x.ndim
        pad[axis] = (half, half)
        # np.pad's reflect repeats the reflection when the image is smaller than the pad.
        padded = np.pad(x, pad, mode="reflect")
        n = x.shape[axis]
        out = np.zeros_like(x)
        for j, w in enumerate(k):
            out += w * np.take(padded, np.arange(j, j + n), axis=axis)
        x = out
    return x.astype(np.float32)


def saliency_order(saliency: np.ndarray) -> np.ndarray:
    """Flat pixel indices of one (H, W) map, most salient first, ties in raster order; (H*W,)."""
    s = np.asarray(saliency)
    if s.ndim != 2:
        raise InputError(f"saliency_order takes one (H, W) map, got shape {s.shape}")
    # A stable sort of the negated values keeps equal-saliency pixels in raster order.
    return np.argsort(-s.ravel().astype(np.float64), kind="stable")


def auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoid AUC over x in [0, 1] of (..., steps + 1) curves; (...,) float64."""
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim == 0 or c.shape[-1] < 2:
        raise InputError(f"a curve needs at least 2 points, got shape {c.shape}")
    return np.trapezoid(c, dx=1.0 / (c.shape[-1] - 1), axis=-1)


def _resolve_steps(h: int, w: int, steps: int | None, pixels_per_step: int | None) -> tuple[int, int]:
    steps = 224 if steps is None else check_positive_int(steps, "steps")
    if pixels_per_step is None:
        pixels_per_step = math.ceil(h * w / steps)
    else:
        pixels_per_step = check_positive_int(pixels_per_step, "pixels_per_step")
    return steps, pixels_per_step


def _perturbed(
    start: np.ndarray, final: np.ndarray, order: np.ndarray, steps: int, pixels_per_step: int
) -> Iterator[np.ndarray]:
    """Yield steps + 1 images (3, H, W): ``start`` with the first k*pps ranked pixels from ``final``."""
    c, h, w = start.shape
    state = start.reshape(c, h * w).copy()
    src = final.reshape(c, h * w)
    n = h * w
    yield state.reshape(c, h, w).copy()
    for k in range(1, steps + 1):
        lo, hi = min((k - 1) * pixels_per_step, n), min(k * pixels_per_step, n)
        idx = order[lo:hi]
        state[:, idx] = src[:, idx]
        # A copy per step: the batch keeps each image while the state moves on.
        yield state.reshape(c, h, w).copy()


def perturbation_curves(
    images: np.ndarray,
    saliency: np.ndarray,
    targets: np.ndarray,
    predict_proba: PredictProba,
    *,
    mode: Mode,
    steps: int = 224,
    pixels_per_step: int | None = None,
    batch_size: int = 32,
    blur_size: int = 11,
    blur_sigma: float = 5.0,
    progress: Progress | None = None,
) -> CurveResult:
    """Insertion or deletion curves for N images (see the module docstring for the protocol).

    ``images``: (N, 3, H, W) float32 in [0, 1]; ``saliency``: (N, H, W); ``targets``: (N,)
    class indices (or one int for all). ``predict_proba`` is called with at most
    ``batch_size`` images at a time, N * (steps + 1) images in all. ``progress(done, total)``
    is called after each batch. Returns (N, steps + 1) curves and (N,) AUCs.
    """
    if mode not in ("insertion", "deletion"):
        raise InputError(f"mode must be 'insertion' or 'deletion', got {mode!r}")
    x = check_images(images)
    n, _, h, w = x.shape
    s = check_maps(saliency, (n, h, w))
    t = check_targets(targets, n)
    bs = check_positive_int(batch_size, "batch_size")
    steps, pps = _resolve_steps(h, w, steps, pixels_per_step)
    if mode == "insertion":
        gaussian_kernel(blur_size, blur_sigma)  # validate before any work is done

    def items() -> Iterator[tuple[np.ndarray, int]]:
        for i in range(n):
            if mode == "deletion":
                start, final = x[i], np.zeros_like(x[i])
            else:
                start, final = gaussian_blur(x[i], blur_size, blur_sigma), x[i]
            for img in _perturbed(start, final, saliency_order(s[i]), steps, pps):
                yield img, int(t[i])

    total = n * (steps + 1)
    scores = np.concatenate(list(batched_scores(items(), total, predict_proba, bs, progress)))
    curves = scores.reshape(n, steps + 1)
    return CurveResult(curves=curves, aucs=auc(curves))


def deletion(
    images: np.ndarray,
    saliency: np.ndarray,
    targets: np.ndarray,
    predict_proba: PredictProba,
    *,
    steps: int = 224,
    pixels_per_step: int | None = None,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> CurveResult:
    """Deletion curves (pixels set to 0, most salient first) and AUCs; lower is better."""
    return perturbation_curves(images, saliency, targets, predict_proba, mode="deletion",
                               steps=steps, pixels_per_step=pixels_per_step,
                               batch_size=batch_size, progress=progress)


def insertion(
    images: np.ndarray,
    saliency: np.ndarray,
    targets: np.ndarray,
    predict_proba: PredictProba,
    *,
    steps: int = 224,
    pixels_per_step: int | None = None,
    batch_size: int = 32,
    blur_size: int = 11,
    blur_sigma: float = 5.0,
    progress: Progress | None = None,
) -> CurveResult:
    """Insertion curves (blurred image, original pixels revealed most salient first) and AUCs.

    Higher is better. The start image is :func:`gaussian_blur` of each image.
    """
    return perturbation_curves(images, saliency, targets, predict_proba, mode="insertion",
                               steps=steps, pixels_per_step=pixels_per_step,
                               batch_size=batch_size, blur_size=blur_size,
                               blur_sigma=blur_sigma, progress=progress)
