"""Reading images into model-ready arrays, and the sample photos that ship with installed packages."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from opticam_rt.errors import InputError


@dataclass
class LoadedImage:
    """An image as read from disk and resized for the model.

    ``original`` is (H0, W0, 3) uint8 RGB at the file's resolution, EXIF orientation applied;
    ``pixels`` is (3, H, W) float32 in [0, 1] at the model's input size.
    """

    source: str
    original: np.ndarray
    pixels: np.ndarray


def to_model_input(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H0, W0, 3) uint8 -> (3, H, W) float32 in [0, 1], bilinear resize to ``size`` = (H, W)."""
    from PIL import Image

    resized = Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0)


class _FileContent(io.BytesIO):
    """A file's bytes that Pillow's messages name as the file (its repr is the path's), so errors
    read the same whether the file or its content was given."""

    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(data)
        self.path = path

    def __repr__(self) -> str:
        return repr(str(self.path))


def read_rgb(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """Any Pillow-readable file (JPEG, PNG, WebP, BMP, ...) -> (H0, W0, 3) uint8 RGB.

    ``data``, when given, is the file's content already read (e.g. by a Ray driver on another
    machine); ``path`` then only names it in errors.

    EXIF orientation is applied; grayscale is replicated to three channels; alpha is composited
    over white (a transparent background should not read as black, which masking means "removed").

    Raises:
        InputError: naming the file when it is missing or not a readable image.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if data is None and not path.is_file():
        raise InputError(f"{path}: no such image file")
    try:
        with Image.open(path if data is None else _FileContent(data, path)) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode.startswith("I;16") or img.mode == "I":
                # 16-bit grayscale (e.g. PNG): convert("RGB") would clip at 255, not rescale
                wide = np.asarray(img, dtype=np.float64) / 257.0
                img = Image.fromarray(np.clip(np.rint(wide), 0, 255).astype(np.uint8))  # mode L
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from exc


def load_image(path: str | Path, size: tuple[int, int], data: bytes | None = None) -> LoadedImage:
    """Read ``path`` (or decode ``data``, its content, see :func:`read_rgb`) at the model's ``size`` = (H, W)."""
    rgb = read_rgb(path, data)
    return LoadedImage(str(path), rgb, to_model_input(rgb, size))


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
