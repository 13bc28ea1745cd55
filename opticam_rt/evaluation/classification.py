"""Average drop / increase / gain: the classification metrics of the Opti-CAM paper.

Definitions follow Zhang et al., "Opti-CAM: Optimizing saliency maps for interpretability",
arXiv 2301.07002 (CVIU 248, 2024), Section 4, equations (13)-(15) (numbering of the CVIU
version). With ``p_i`` the softmax probability of the target class ``c`` on the i-th image
``x_i`` and ``o_i`` that on the masked image ``x_i * S_i`` (pixel-wise product with the
saliency map, which has the image's resolution and values in [0, 1]):

    AD(%) = 1/N sum_i [p_i - o_i]^+ / p_i * 100          (13)  lower is better
    AI(%) = 1/N sum_i 1[p_i < o_i] * 100                  (14)  higher is better
    AG(%) = 1/N sum_i [o_i - p_i]^+ / (1 - p_i) * 100     (15)  higher is better

AD and AI come from Chattopadhay et al. 2018 (Grad-CAM++); AG is introduced by Opti-CAM as
the symmetric counterpart of AD. The ``*_per_image`` functions return the summands times 100
so that per-image rows can be stored and aggregated later: the mean of the per-image values
is the metric.
"""

from __future__ import annotations

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.evaluation._checks import (
    PredictProba,
    Progress,
    batched_scores,
    check_images,
    check_maps,
    check_positive_int,
    check_probabilities,
    check_targets,
)

__all__ = [
    "average_drop",
    "average_drop_per_image",
    "average_gain",
    "average_gain_per_image",
    "average_increase",
    "average_increase_per_image",
    "classification_metrics",
    "classification_metrics_per_image",
    "mask_images",
    "target_probabilities",
]


def _pair(p: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = check_probabilities(p, "p")
    o = check_probabilities(o, "o")
    if p.shape != o.shape:
        raise InputError(f"p and o must have the same shape, got {p.shape} and {o.shape}")
    if p.size == 0:
        raise InputError("p and o must hold at least one image")
    return p, o


def average_drop_per_image(p: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Per-image drop ``[p - o]^+ / p * 100``; (N,) float64 in [0, 100].

    ``p``: (N,) probabilities of the target class on the images; ``o``: (N,) on the masked
    images. Where ``p == 0`` the numerator is 0 too and the drop is defined as 0.
    """
    p, o = _pair(p, o)
    num = np.maximum(p - o, 0.0)
    return np.divide(num, p, out=np.zeros_like(p), where=p > 0.0) * 100.0


def average_increase_per_image(p: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Per-image increase indicator ``1[p < o] * 100``; (N,) float64 in {0, 100}."""
    p, o = _pair(p, o)
    return (p < o).astype(np.float64) * 100.0


def average_gain_per_image(p: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Per-image gain ``[o - p]^+ / (1 - p) * 100``; (N,) float64 in [0, 100].

    Where ``p == 1`` the numerator is 0 too (``o <= 1``) and the gain is defined as 0.
    """
    p, o = _pair(p, o)
    num = np.maximum(o - p, 0.0)
    den = 1.0 - p
    return np.divide(num, den, out=np.zeros_like(p), where=den > 0.0) * 100.0


def average_drop(p: np.ndarray, o: np.ndarray) -> float:
    """AD(%), Opti-CAM eq. (13): mean of :func:`average_drop_per_image`. Lower is better."""
    return float(np.mean(average_drop_per_image(p, o)))


def average_increase(p: np.ndarray, o: np.ndarray) -> float:
    """AI(%), Opti-CAM eq. (14): percentage of images with ``p < o``. Higher is better."""
    return float(np.mean(average_increase_per_image(p, o)))


def average_gain(p: np.ndarray, o: np.ndarray) -> float:
    """AG(%), Opti-CAM eq. (15): mean of :func:`average_gain_per_image`. Higher is better."""
    return float(np.mean(average_gain_per_image(p, o)))


def classification_metrics_per_image(p: np.ndarray, o: np.ndarray) -> dict[str, np.ndarray]:
    """``{"AD", "AG", "AI"}`` -> (N,) per-image values in percent (see module docstring)."""
    return {
        "AD": average_drop_per_image(p, o),
        "AG": average_gain_per_image(p, o),
        "AI": average_increase_per_image(p, o),
    }


def classification_metrics(p: np.ndarray, o: np.ndarray) -> dict[str, float]:
    """``{"AD": ..., "AG": ..., "AI": ...}`` in percent over the N images of ``p`` / ``o``."""
    return {name: float(np.mean(v)) for name, v in classification_metrics_per_image(p, o).items()}


def mask_images(images: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """Masked images ``x * S`` in pixel space; (N, 3, H, W) float32.

    ``images``: (N, 3, H, W) in [0, 1]; ``saliency``: (N, H, W) in [0, 1], broadcast over the
    channels. Masking is done before any normalisation the model applies, i.e. a saliency
    of 0 turns a pixel black.
    """
    x = check_images(images)
    s = check_maps(saliency, (x.shape[0], x.shape[2], x.shape[3]))
    return x * s[:, None, :, :]


def target_probabilities(
    images: np.ndarray,
    targets: np.ndarray,
    predict_proba: PredictProba,
    *,
    saliency: np.ndarray | None = None,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> np.ndarray:
    """Probability of each image's target class; (N,) float64.

    With ``saliency`` (N, H, W) given, the images are masked first (:func:`mask_images`), which
    gives the ``o`` of the metrics; without it, ``p``. ``predict_proba`` receives at most
    ``batch_size`` images per call.
    """
    x = check_images(images)
    t = check_targets(targets, x.shape[0])
    bs = check_positive_int(batch_size, "batch_size")
    if saliency is not None:
        s = check_maps(saliency, (x.shape[0], x.shape[2], x.shape[3]))
        # Mask lazily, one image at a time, so that no second full copy of the batch is made.
        items = ((x[i] * s[i][None], int(t[i])) for i in range(x.shape[0]))
    else:
        items = ((x[i], int(t[i])) for i in range(x.shape[0]))
    return np.concatenate(list(batched_scores(items, x.shape[0], predict_proba, bs, progress)))
