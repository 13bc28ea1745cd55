"""Reading images into model-ready arrays, and the sample photos that ship with installed packages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opticam_rt.errors import InputError

#: Longest side, in pixels, of the photo kept for the overlay. A 10000 x 8000 photo at full size
#: cost gigabytes in float overlay blending; 2048 is more than any screen shows of it.
OVERLAY_MAX_SIDE = 2048


@dataclass
class LoadedImage:
    """An image as read from disk and resized for the model.

    ``original`` is (H1, W1, 3) uint8 RGB, EXIF orientation applied: the file's resolution, or
    shrunk to at most ``OVERLAY_MAX_SIDE`` on its longest side (it only serves for overlays);
    ``original_size`` is the file's (H0, W0) after orientation; ``pixels`` is (3, H, W) float32
    in [0, 1] at the model's input size.
    """

    source: str
    original: np.ndarray
    pixels: np.ndarray
    original_size: tuple[int, int] = (0, 0)


def shrink_to(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """(H0, W0, 3) uint8 -> the same photo with its longest side at most ``max_side`` (area resampling)."""
    from PIL import Image

    h0, w0 = rgb.shape[:2]
    scale = max_side / max(h0, w0)
    if scale >= 1:
        return rgb
    size = (max(1, round(w0 * scale)), max(1, round(h0 * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BOX))


def to_model_input(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H0, W0, 3) uint8 -> (3, H, W) float32 in [0, 1], bilinear resize to ``size`` = (H, W)."""
    from PIL import Image

    resized = Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0)


def read_rgb(path: str | Path) -> np.ndarray:
    """Any Pillow-readable file (JPEG, PNG, WebP, BMP, ...) -> (H0, W0, 3) uint8 RGB.

    EXIF orientation is applied; grayscale is replicated to three channels; alpha is composited
    over white (a transparent background should not read as black, which masking means "removed").
    Images above Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89
    megapixels by default) are refused: a 90 KB PNG can declare 20000 x 20000 pixels.

    Raises:
        InputError: naming the file when it is missing, a folder, unreadable, too large or not
            a decodable image.
    """
    import warnings

    from PIL import Image

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow's notes on odd metadata (e.g. TIFF tags past the end) are not the user's business
            warnings.simplefilter("ignore", UserWarning)
            return _decode(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{path}: image too large to decode safely ({exc})") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied (not readable)") from None
    except MemoryError:
        raise InputError(f"{path}: not enough memory to decode this image") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on corrupt files
        text = " ".join(str(exc).split())[:200]
        raise InputError(f"{path}: not a readable image ({type(exc).__name__}: {text})") from None


def _decode(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode.startswith("I;16") or img.mode == "I":
            # 16-bit grayscale (e.g. PNG): convert("RGB") would clip at 255, not rescale
            wide = np.asarray(img, dtype=np.float64) / 257.0
            img = Image.fromarray(np.clip(np.rint(wide), 0, 255).astype(np.uint8))  # mode L
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(background, rgba)
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ValueError(f"decoded to an array of shape {rgb.shape}")
    return rgb


def load_image(path: str | Path, size: tuple[int, int], overlay_max_side: int = OVERLAY_MAX_SIDE) -> LoadedImage:
    """Read, then resize for the model; the photo kept for the overlay is shrunk (see LoadedImage)."""
    rgb = read_rgb(path)
    try:
        pixels = to_model_input(rgb, size)
    except Exception as exc:  # noqa: BLE001 - e.g. a 1 x 60000 strip Pillow cannot resample
        raise InputError(f"{path}: cannot be resized to {size[0]}x{size[1]} ({type(exc).__name__}: {exc})") from None
    return LoadedImage(str(path), shrink_to(rgb, overlay_max_side), pixels, (int(rgb.shape[0]), int(rgb.shape[1])))


def sample_photos(extended: bool = False) -> dict[str, np.ndarray]:
    """Real photographs shipped inside installed packages: name -> (H0, W0, 3) uint8.

    The four colour photos of scikit-image's bundled data (no download); ``extended`` adds its
    grayscale photos (camera, clock, coins) and matplotlib's grace_hopper.jpg. Missing packages
    give fewer photos, never an error.
    """
    photos: dict[str, np.ndarray] = {}
    names = ["chelsea", "coffee", "astronaut", "rocket"] + (["camera", "clock", "coins"] if extended else [])
    try:
        from skimage import data
    except ImportError:
        data = None
    for name in names if data is not None else []:
        try:
            img = np.asarray(getattr(data, name)(), dtype=np.uint8)
        except Exception:  # noqa: BLE001 - a missing sample is skipped, never fatal
            continue
        photos[name] = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]
    if extended:
        try:
            import matplotlib

            path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
            if path.is_file():
                photos["grace_hopper"] = read_rgb(path)
        except ImportError:
            pass
    return photos


def write_sample_photos(folder: str | Path, extended: bool = True) -> list[Path]:
    """Save :func:`sample_photos` as PNG files in ``folder`` (for ``opticam-rt evaluate``)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, rgb in sample_photos(extended).items():
        paths.append(folder / f"{name}.png")
        Image.fromarray(rgb).save(paths[-1])
    return paths
