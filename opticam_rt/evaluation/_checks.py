"""Input checks and batching shared by the evaluation metrics (private)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from opticam_rt.errors import InputError

#: The type of the classifier callable every metric takes: pixel-space float32 images
#: (M, 3, H, W) in [0, 1] -> softmax probabilities (M, C). The caller decides how the model
#: is run; the metrics only promise never to pass more than ``batch_size`` images at once.
PredictProba = Callable[[np.ndarray], np.ndarray]

#: Optional progress callback: ``progress(done, total)`` in images passed to ``predict_proba``.
Progress = Callable[[int, int], None]


def check_images(images: Any, name: str = "images") -> np.ndarray:
    """Return ``images`` as float32 (N, 3, H, W); raise InputError if the shape or values are wrong."""
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise InputError(f"{name} must have shape (N, 3, H, W), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[2] == 0 or arr.shape[3] == 0:
        raise InputError(f"{name} must not be empty, got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def check_maps(saliency: Any, shape: tuple[int, int, int] | None = None, name: str = "saliency") -> np.ndarray:
    """Return saliency maps as float32 (N, H, W); ``shape`` (N, H, W) must match when given."""
    arr = np.asarray(saliency)
    if arr.ndim != 3:
        raise InputError(f"{name} must have shape (N, H, W), got {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise InputError(f"{name} has shape {arr.shape}, expected {tuple(shape)} to match the images")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def check_map(saliency: Any, name: str = "saliency") -> np.ndarray:
    """Return a single saliency map as float64 (H, W); raise InputError otherwise."""
    arr = np.asarray(saliency)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"{name} must be one non-empty map of shape (H, W), got {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def check_targets(targets: Any, n: int, name: str = "targets") -> np.ndarray:
    """Return class indices as int64 (N,); raise InputError if not N non-negative integers."""
    arr = np.asarray(targets)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,):
        raise InputError(f"{name} must have shape ({n},), got {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{name} must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if np.any(arr < 0):
        raise InputError(f"{name} must be non-negative class indices, got {arr.min()}")
    return arr


def check_probabilities(values: Any, name: str) -> np.ndarray:
    """Return a 1-D float64 array of probabilities in [0, 1]; raise InputError otherwise."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array of probabilities, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinite values")
    if np.any(arr < 0.0) or np.any(arr > 1.0):
        raise InputError(f"{name} must lie in [0, 1] (softmax probabilities), got range "
                         f"[{arr.min():.4g}, {arr.max():.4g}]")
    return arr


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int >= 1; raise InputError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def target_scores(probs: Any, targets: np.ndarray, batch_len: int) -> np.ndarray:
    """Pick ``probs[j, targets[j]]`` from one ``predict_proba`` answer, checking its shape."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != batch_len:
        raise InputError(f"predict_proba must return shape ({batch_len}, C) for {batch_len} images, "
                         f"got {arr.shape}")
    if np.any(targets >= arr.shape[1]):
        raise InputError(f"target class {int(targets.max())} is out of range for {arr.shape[1]} classes")
    return arr[np.arange(batch_len), targets]


def batched_scores(
    items: Iterable[tuple[np.ndarray, int]],
    total: int,
    predict_proba: PredictProba,
    batch_size: int,
    progress: Progress | None = None,
) -> Iterator[np.ndarray]:
    """Feed (image (3, H, W), target) pairs to ``predict_proba`` at most ``batch_size`` at a time.

    Yields, per batch, the (B,) probabilities of each image's target class, in input order.
    Images are stacked only one batch at a time so that memory stays bounded by
    ``batch_size`` images however many perturbed images the caller generates.
    """
    batch: list[np.ndarray] = []
    batch_targets: list[int] = []
    done = 0

    def flush() -> np.ndarray:
        nonlocal done
        # A fresh array per batch: a callable that keeps a reference to its input must not
        # see it overwritten by the next batch.
        stacked = np.stack(batch).astype(np.float32, copy=False)
        scores = target_scores(predict_proba(stacked), np.asarray(batch_targets, np.int64), len(batch))
        done += len(batch)
        batch.clear()
        batch_targets.clear()
        if progress is not None:
            progress(done, total)
        return scores

    for image, target in items:
        batch.append(image)
        batch_targets.append(int(target))
        if len(batch) == batch_size:
            yield flush()
    if batch:
        yield flush()
