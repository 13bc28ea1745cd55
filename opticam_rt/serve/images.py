"""Encoded image files of a BYTES ``image`` input -> model pixels, as ``explain`` reads files."""

from __future__ import annotations

import io

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.images import load_image
from opticam_rt.serve.errors import bad_request, too_large


def decode_images(encoded: list[bytes], size: tuple[int, int], max_pixels: int) -> np.ndarray:
    """N encoded files (JPEG, PNG, WebP, ...) -> (N, 3, H, W) float32 in [0, 1] at ``size`` = (H, W).

    The same decoding and resizing as ``opticam-rt explain`` (``images.load_image``: EXIF
    orientation, alpha over white, bilinear resize). Each file's declared size is read from its
    header first, so a small file declaring a huge image is refused (413) before it is decoded.

    Raises:
        ServeError: 413 for an image over ``max_pixels``; 400 for one that is not a readable image.
    """
    from PIL import Image

    out = np.empty((len(encoded), 3, *size), dtype=np.float32)
    for i, data in enumerate(encoded):
        name = f"image[{i}]"
        try:
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
        except Exception:  # noqa: BLE001 - not an image Pillow knows: load_image names the problem below
            width = height = 0
        if width * height > max_pixels:
            raise too_large(f"{name}: {width} x {height} pixels is over this server's limit of {max_pixels} pixels per image")
        try:
            out[i] = load_image(name, size, overlay_max_side=1, data=data).pixels
        except InputError as exc:
            raise bad_request(str(exc)) from None
    return out
