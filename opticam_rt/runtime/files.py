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
    #: The overlay already encoded as PNG (``explain_batch(render_overlay=True)``, on a Ray
    #: worker), so the driver only writes bytes; ``original`` is then None.
    overlay_png: bytes | None = field(default=None, repr=False)


def parse_target(text: str | int | None) -> int | None:
    """'top1' (or None) -> None; an integer string -> int."""
    if text is None or text == "top1":
        return None
    try:
        return int(text)
    except ValueError as exc:
        raise InputError(f"target {text!r} must be 'top1' or a class index") from exc


def output_stems(paths: Sequence[str | Path]) -> list[str]:
    """A distinct file stem per input, in input order (``photo``, ``photo-2``, ...).

    Assigned up front from the inputs alone, so outputs are named the same whichever order
    batches finish in (one process or a Ray cluster) and whichever images fail.
    """
    used: set[str] = set()
    stems = []
    for path in paths:
        stem = Path(str(path)).stem or "image"
        name, i = stem, 1
        while name in used:
            i += 1
            name = f"{stem}-{i}"
        used.add(name)
        stems.append(name)
    return stems


def explain_batch(
    explainer: Explainer,
    paths: Sequence[str | Path],
    method: str,
    target: int | None = None,
    options: dict[str, Any] | None = None,
    contents: Sequence[bytes | None] | None = None,
    progress: Callable[[int], None] | None = None,
    render_overlay: bool = False,
) -> list[FileResult]:
    """Load and explain one batch of files: the unit of work of every executor.

    One FileResult per path, in order: ``record`` (without output paths), ``saliency`` and
    ``original`` when explained, ``error`` otherwise. ``contents`` optionally holds each file's
    content already read (None: read the path here). ``render_overlay`` encodes the overlay PNG
    here (``overlay_png``) instead of keeping ``original``: a Ray worker does this, so the driver,
    which writes every output, is not the bottleneck (an overlay costs 30-90 ms here).
    """
    results: list[FileResult] = []
    loaded: list[tuple[FileResult, LoadedImage]] = []
    num_classes = explainer.bundle.manifest.num_classes
    for i, path in enumerate(paths):
        result = FileResult(str(path))
        try:
            if target is not None and not 0 <= target < num_classes:
                raise InputError(f"target class {target} is out of range: the model has classes 0..{num_classes - 1}")
            loaded.append((result, load_image(path, explainer.input_size, contents[i] if contents is not None else None)))
        except OpticamError as exc:
            result.error = str(exc)
        results.append(result)
    if not loaded:
        return results
    images = np.stack([img.pixels for _, img in loaded])
    try:
        explanation = explainer.explain(images, method=method, targets=target, progress=progress, **(options or {}))
    except InputError as exc:
        for result, _ in loaded:
            result.error = str(exc)
        return results
    per_image = explanation.seconds / len(loaded)
    for i, (result, img) in enumerate(loaded):
        result.record = {"image": result.image, **explanation.record(i), "seconds": per_image}
        result.saliency = explanation.maps[i]
        if render_overlay:
            result.overlay_png = _png_bytes(overlay(img.original, result.saliency))
        else:
            result.original = img.original
    return results


def _png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> the PNG file ``save_png`` would write, as bytes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def write_outputs(result: FileResult, method: str, stem: str, out_dir: str | Path | None) -> None:
    """Write an explained result's ``<stem>.<method>.npy`` (float32 map at model resolution) and
    ``<stem>.<method>.png`` (overlay at the original resolution) into ``out_dir`` and put their
    paths in its record (None without ``out_dir``). Results with an error are left alone."""
    if result.record is None:
        return
    if out_dir is None:
        result.record.update(map=None, overlay=None)
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    npy = out / f"{stem}.{method}.npy"
    np.save(npy, result.saliency.astype(np.float32))
    png = out / f"{stem}.{method}.png"
    if result.overlay_png is not None:
        png.write_bytes(result.overlay_png)
    else:
        save_png(overlay(result.original, result.saliency), png)
    result.record.update(map=str(npy), overlay=str(png))


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
    (overlay at the original resolution) into ``out_dir`` when given. opticam_rt.scale runs the
    same batches (:func:`explain_batch`, :func:`write_outputs`) on a Ray cluster.
    """
    results: list[FileResult] = []
    stems = output_stems(paths)
    for start in range(0, len(paths), batch_size):
        batch = explain_batch(explainer, paths[start : start + batch_size], method, target, options, progress=progress)
        for i, result in enumerate(batch):
            write_outputs(result, method, stems[start + i], out_dir)
            if on_result:
                on_result(result)
        results += batch
    return results
