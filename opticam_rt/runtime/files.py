"""Explain image files in batches: per-file errors reported, outputs (.npy map, .png overlay) written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from opticam_rt.errors import InputError, OpticamError
from opticam_rt.images import LoadedImage, load_image
from opticam_rt.overlay import overlay, save_png
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


def explain_files(
    explainer: Explainer,
    paths: Sequence[str | Path],
    method: str = "opti-cam",
    target: int | None = None,
    batch_size: int = 8,
    out_dir: str | Path | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    progress: Callable[[int], None] | None = None,
    **options: Any,
) -> list[FileResult]:
    """Explain every readable file; unreadable files and bad targets become FileResult errors.

    Writes ``<stem>.<method>.npy`` (float32 map at model resolution) and ``<stem>.<method>.png``
    (overlay at the original resolution) into ``out_dir`` when given.
    """
    results: list[FileResult] = []
    loaded: list[tuple[FileResult, LoadedImage]] = []
    num_classes = explainer.bundle.manifest.num_classes
    for path in paths:
        result = FileResult(str(path))
        try:
            if target is not None and not 0 <= target < num_classes:
                raise InputError(f"target class {target} is out of range: the model has classes 0..{num_classes - 1}")
            loaded.append((result, load_image(path, explainer.input_size)))
        except OpticamError as exc:
            result.error = str(exc)
            if on_result:
                on_result(result)
        results.append(result)
    out = Path(out_dir) if out_dir is not None else None
    used: set[str] = set()
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start : start + batch_size]
        images = np.stack([img.pixels for _, img in chunk])
        try:
            explanation = explainer.explain(images, method=method, targets=target, progress=progress, **options)
        except InputError as exc:
            for result, _ in chunk:
                result.error = str(exc)
                if on_result:
                    on_result(result)
            continue
        per_image = explanation.seconds / len(chunk)
        for i, (result, img) in enumerate(chunk):
            record = {"image": result.image, **explanation.record(i), "seconds": per_image}
            if out is not None:
                stem = _stem(result.image, used)
                out.mkdir(parents=True, exist_ok=True)
                npy = out / f"{stem}.{method}.npy"
                np.save(npy, explanation.maps[i].astype(np.float32))
                png = save_png(overlay(img.original, explanation.maps[i]), out / f"{stem}.{method}.png")
                record.update(map=str(npy), overlay=str(png))
            else:
                record.update(map=None, overlay=None)
            result.record = record
            result.saliency = explanation.maps[i]
            result.original = img.original
            if on_result:
                on_result(result)
    return results
