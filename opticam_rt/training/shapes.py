"""A dataset that can be made here: one shape per image decides the class, and its box is known.

Each image (3, size, size) in [0, 1] has a low-frequency coloured background, ``clutter``
distractor bars (thin rectangles in random colours, in every class alike) and one object, a
filled square, disc, cross or triangle (the class, in that order) of random size, colour and
position. The object's box ``(x0, y0, x1, y1)`` (pixels, exclusive end) is the ground truth the
localisation metrics compare saliency against. Deterministic given the seed.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

CLASSES = ("square", "disc", "cross", "triangle")


class ShapeData(NamedTuple):
    images: np.ndarray  # (N, 3, size, size) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64, index into CLASSES
    boxes: np.ndarray  # (N, 4) int64 x0, y0, x1, y1


def _shape_mask(kind: int, s: int) -> np.ndarray:
    """(s, s) boolean mask of shape ``kind`` filling an s x s square."""
    yy, xx = np.mgrid[0:s, 0:s] + 0.5
    c = s / 2
    if kind == 0:
        return np.ones((s, s), bool)
    if kind == 1:
        return (xx - c) ** 2 + (yy - c) ** 2 <= c**2
    if kind == 2:
        w = max(2, s // 3)
        lo = (s - w) // 2
        m = np.zeros((s, s), bool)
        m[lo : lo + w] = True
        m[:, lo : lo + w] = True
        return m
    return np.abs(xx - c) <= yy / 2  # apex up, base at the bottom row


def make_shapes(n: int, size: int = 48, seed: int = 0, clutter: int = 3, min_object: int = 10,
                max_object: int = 18) -> ShapeData:
    """``n`` images with balanced classes (see module docstring)."""
    if not 4 <= min_object <= max_object <= size:
        raise ValueError(f"object sizes must satisfy 4 <= min_object <= max_object <= size, got "
                         f"{min_object}, {max_object}, {size}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, 3, size, size), np.float32)
    labels = np.arange(n, dtype=np.int64) % len(CLASSES)
    rng.shuffle(labels)
    boxes = np.empty((n, 4), np.int64)
    coarse = max(2, size // 8)
    for i in range(n):
        low = rng.uniform(0.1, 0.6, (3, coarse, coarse))
        img = np.kron(low, np.ones((size // coarse + 1, size // coarse + 1)))[:, :size, :size]
        img = img + rng.normal(0, 0.04, img.shape)
        for _ in range(clutter):
            horizontal = rng.random() < 0.5
            length, width = int(rng.integers(6, 16)), int(rng.integers(1, 3))
            h, w = (width, length) if horizontal else (length, width)
            y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            img[:, y : y + h, x : x + w] = rng.uniform(0.3, 1.0, (3, 1, 1))
        s = int(rng.integers(min_object, max_object + 1))
        y, x = int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))
        mask = _shape_mask(int(labels[i]), s)
        colour = rng.uniform(0.5, 1.0, (3, 1)) * rng.permutation([1.0, 1.0, 0.3])[:, None]
        region = img[:, y : y + s, x : x + s]
        region[:, mask] = colour
        ys, xs = np.nonzero(mask)
        boxes[i] = (x + xs.min(), y + ys.min(), x + xs.max() + 1, y + ys.max() + 1)
        images[i] = np.clip(img, 0, 1)
    return ShapeData(images, labels, boxes)
