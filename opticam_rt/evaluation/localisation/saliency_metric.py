"""The saliency metric SM (Dabkowski & Gal 2017): crop to the predicted box, score the crop.

Conventions (boxes, binarisation, components): see :mod:`opticam_rt.evaluation.localisation`."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.evaluation._checks import PredictProba, Progress, batched_scores, check_images, check_maps, check_positive_int, check_targets
from opticam_rt.evaluation.localisation.boxes import Threshold
from opticam_rt.evaluation.localisation.components import predicted_box


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of (C, h, w) to (C, height, width), float32.

    Half-pixel centres with edge clamping, i.e. PyTorch's ``interpolate(mode="bilinear",
    align_corners=False)`` without antialiasing.
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] == 0 or x.shape[2] == 0:
        raise InputError(f"resize_bilinear takes a non-empty (C, h, w) image, got {x.shape}")
    _, h, w = x.shape

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0).astype(np.float32)

    y0, y1, wy = axis(h, height)
    x0, x1, wx = axis(w, width)
    rows = x[:, y0, :] * (1 - wy)[None, :, None] + x[:, y1, :] * wy[None, :, None]
    return rows[:, :, x0] * (1 - wx)[None, None, :] + rows[:, :, x1] * wx[None, None, :]


def saliency_metric(
    images: np.ndarray,
    saliency: np.ndarray,
    targets: np.ndarray,
    predict_proba: PredictProba,
    *,
    threshold: Threshold = "mean",
    area_floor: float = 0.05,
    connectivity: int = 8,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> np.ndarray:
    """Saliency metric SM per image (lower is better); (N,) float64.

    Dabkowski & Gal, "Real Time Image Saliency for Black Box Classifiers", NeurIPS 2017, the
    "saliency metric" of its experiments: ``SM = log(max(a, 0.05)) - log(p)``, where ``a`` is the
    area of the tightest rectangular crop around the salient region as a fraction of the
    image, and ``p`` the probability of the class on that crop resized to the model input.
    As in the Opti-CAM paper (eq. (B.7), Table A.7) the crop is ``B_p``, the box of the largest
    connected component of the map thresholded at ``threshold`` (default: the map's mean).
    The crop is resized with :func:`resize_bilinear`. A map with no foreground pixel crops
    the whole image (a = 1); ``p`` is floored at 1e-12 so that ``log`` stays finite.

    ``images``: (N, 3, H, W) in [0, 1]; ``saliency``: (N, H, W); ``targets``: (N,) classes
    (the ground-truth class in the paper).
    """
    x = check_images(images)
    n, _, h, w = x.shape
    s = check_maps(saliency, (n, h, w))
    t = check_targets(targets, n)
    bs = check_positive_int(batch_size, "batch_size")
    if not (0.0 < area_floor <= 1.0):
        raise InputError(f"area_floor must be in (0, 1], got {area_floor}")
    boxes = [predicted_box(s[i], threshold, connectivity=connectivity) or (0, 0, w, h) for i in range(n)]
    areas = np.array([(x1 - x0) * (y1 - y0) / (h * w) for x0, y0, x1, y1 in boxes])

    def items() -> Iterator[tuple[np.ndarray, int]]:
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            yield resize_bilinear(x[i][:, y0:y1, x0:x1], h, w), int(t[i])

    p = np.concatenate(list(batched_scores(items(), n, predict_proba, bs, progress)))
    return np.log(np.maximum(areas, area_floor)) - np.log(np.maximum(p, 1e-12))
