"""Explain image files in batches: per-file errors reported, outputs (.npy map, .png overlay) written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from opticam_rt.errors import InputError, OpticamError, OutputError
from opticam_rt.images import LoadedImage, load_image
from opticam_rt.outputs import check_new_file, check_writable_folder, write_file
from opticam_rt.overlay import overlay
from opticam_rt.runtime.explainer import Explainer


@dataclass
class FileResult:
    """One image's outcome: ``record`` (JSON-ready) when explained, ``error`` otherwise."""

    image: str
    record: dict[str, Any] | None = None
    error: str | None = None
    saliency: np.ndarray | None = field(default=None, repr=False)
    original: np.ndarray | None = field(default=None, repr=False)


def parse_target(text: str | int | None) -> int | None:
    """'top1' (or None) -> None; an integer string -> int."""
    if text is None or text == "top1":
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise InputError(f"target {text!r} must be 'top1' or a class index") from exc


def _stem(path: str, used: set[str]) -> str:
    stem = Path(path).stem or "image"
    name, i = stem, 1
    while name in used:
        i += 1
        name = f"{stem}-{i}"
    used.add(name)
    return name


def output_paths(out: Path, stem: str, method: str) -> tuple[Path, Path]:
    """(map .npy, overlay .png) of one image."""
    return out / f"{stem}.{method}.npy", out / f"{stem}.{method}.png"


def _write_outputs(npy: Path, png: Path, saliency: np.ndarray, original: np.ndarray, overwrite: bool) -> None:
    """Write the map and the overlay atomically; if the overlay fails, the map written here is removed."""
    from PIL import Image

    write_file(npy, lambda f: np.save(f, saliency.astype(np.float32)), overwrite)
    try:
        picture = overlay(original, saliency)
        write_file(png, lambda f: Image.fromarray(picture).save(f, format="PNG"), overwrite)
    except BaseException:
        npy.unlink(missing_ok=True)
        raise


def explain_files(
    explainer: Explainer,
    paths: Sequence[str | Path],
    method: str = "opti-cam",
    target: int | None = None,
    batch_size: int = 8,
    out_dir: str | Path | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
    **options: Any,
) -> list[FileResult]:
    """Explain every readable file; unreadable files, bad targets and failed writes become FileResult errors.

    Writes ``<stem>.<method>.npy`` (float32 map at model resolution) and ``<stem>.<method>.png``
    (overlay at the original resolution, longest side capped) into ``out_dir`` when given. Each
    file is written atomically. An existing output is never replaced unless ``overwrite``: the
    image is reported as an error before any work is done for it.

    Raises:
        OutputError: ``out_dir`` cannot be created or written (checked before any computing).
    """
    made_out = out_dir is not None and not Path(out_dir).exists()
    out = check_writable_folder(out_dir) if out_dir is not None else None
    try:
        return _explain_files(explainer, paths, method, target, batch_size, out, on_result, progress, overwrite, options)
    finally:
        if made_out and out is not None and not any(out.iterdir()):
            out.rmdir()  # made only for the writing check, and nothing was written


def _explain_files(
    explainer: Explainer,
    paths: Sequence[str | Path],
    method: str,
    target: int | None,
    batch_size: int,
    out: Path | None,
    on_result: Callable[[FileResult], None] | None,
    progress: Callable[[int], None] | None,
    overwrite: bool,
    options: dict[str, Any],
) -> list[FileResult]:
    results: list[FileResult] = []
    loaded: list[tuple[FileResult, LoadedImage, str]] = []
    num_classes = explainer.bundle.manifest.num_classes
    used: set[str] = set()
    for path in paths:
        result = FileResult(str(path))
        try:
            if target is not None and not 0 <= target < num_classes:
                raise InputError(f"target class {target} is out of range: the model has classes 0..{num_classes - 1}")
            image = load_image(path, explainer.input_size)
            stem = _stem(result.image, used)
            if out is not None:
                for file in output_paths(out, stem, method):
                    check_new_file(file, overwrite)
            loaded.append((result, image, stem))
        except OpticamError as exc:
            result.error = str(exc)
            if on_result:
                on_result(result)
        results.append(result)
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start : start + batch_size]
        images = np.stack([img.pixels for _, img, _ in chunk])
        try:
            explanation = explainer.explain(images, method=method, targets=target, progress=progress, **options)
        except OpticamError as exc:
            for result, _, _ in chunk:
                result.error = str(exc)
                if on_result:
                    on_result(result)
            continue
        per_image = explanation.seconds / len(chunk)
        for i, (result, img, stem) in enumerate(chunk):
            record = {"image": result.image, **explanation.record(i), "seconds": per_image}
            if out is not None:
                npy, png = output_paths(out, stem, method)
                try:
                    _write_outputs(npy, png, explanation.maps[i], img.original, overwrite)
                except OutputError as exc:
                    result.error = str(exc)
                    if on_result:
                        on_result(result)
                    continue
                record.update(map=str(npy), overlay=str(png))
            else:
                record.update(map=None, overlay=None)
            result.record = record
            result.saliency = explanation.maps[i]
            result.original = img.original
            if on_result:
                on_result(result)
    return results
