"""Saliency overlays as images: a colour map over the original photo, and saving it as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Anchor colours of a perceptually ordered blue-cyan-yellow-red map (jet-like, darker ends).
_ANCHORS = np.array(
    [
        [0.00, 0, 0, 128],
        [0.15, 0, 64, 255],
        [0.35, 0, 200, 255],
        [0.50, 80, 255, 160],
        [0.65, 240, 240, 0],
        [0.85, 255, 96, 0],
        [1.00, 160, 0, 0],
    ],
    dtype=np.float32,
)


def colorize(saliency: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) uint8 RGB."""
    s = np.clip(np.nan_to_num(saliency.astype(np.float32)), 0, 1)
    channels = [np.interp(s, _ANCHORS[:, 0], _ANCHORS[:, c]) for c in (1, 2, 3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def overlay(original: np.ndarray, saliency: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourised map, resized to the photo's resolution, over the photo.

    original (H0, W0, 3) uint8; saliency (H, W) in [0, 1] at model resolution -> (H1, W1, 3) uint8,
    the photo's size shrunk to at most ``OVERLAY_MAX_SIDE`` on its longest side (memory stays
    bounded for very large photos).
    """
    from PIL import Image

    from opticam_rt.images import OVERLAY_MAX_SIDE, shrink_to

    original = shrink_to(original, OVERLAY_MAX_SIDE)
    h0, w0 = original.shape[:2]
    resized = np.asarray(Image.fromarray(saliency.astype(np.float32), mode="F").resize((w0, h0), Image.BILINEAR))
    blended = (1 - alpha) * original.astype(np.float32) + alpha * colorize(resized).astype(np.float32)
    return np.clip(blended, 0, 255).astype(np.uint8)


def save_png(rgb: np.ndarray, path: str | Path, overwrite: bool = True) -> Path:
    """Write (H, W, 3) uint8 as a PNG, atomically (see ``opticam_rt.outputs.write_file``)."""
    from PIL import Image

    from opticam_rt.outputs import write_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_file(path, lambda f: Image.fromarray(rgb).save(f, format="PNG"), overwrite)
