"""Explain image files in batches: per-file errors reported, outputs (.npy map, .png overlay) written.

The unit of work is shared by every executor: :func:`plan_files` (output names, outputs refused
before any work, batches), :func:`explain_batch` (load and explain one batch) and
:func:`write_outputs` (atomic writes); :func:`explain_files` runs them in one process and
``opticam_rt.scale`` on a Ray cluster.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from opticam_rt.errors import InputError, OpticamError, OutputError
from opticam_rt.images import LoadedImage, load_image
from opticam_rt.outputs import check_new_file, check_writable_folder, write_files
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


def output_paths(out: Path, stem: str, method: str) -> tuple[Path, Path]:
    """(map .npy, overlay .png) of one image."""
    return out / f"{stem}.{method}.npy", out / f"{stem}.{method}.png"


@dataclass
class FilePlan:
    """What a run over ``paths`` will do: ``stems`` (one per path), ``refused`` (path index ->
    error, for images whose outputs exist and may not be replaced) and ``batches`` (lists of the
    other path indices, ``batch_size`` each, formed before any image is read)."""

    stems: list[str]
    refused: dict[int, str]
    batches: list[list[int]]


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long for the file system exists nowhere
        return False


def plan_files(
    paths: Sequence[str | Path], method: str, batch_size: int, out: Path | None, overwrite: bool
) -> FilePlan:
    """Name every output and refuse, before any work, an image whose outputs already exist
    (unless ``overwrite``); batch the rest."""
    stems = output_stems(paths)
    refused: dict[int, str] = {}
    if out is not None:
        for i, stem in enumerate(stems):
            pair = output_paths(out, stem, method)
            try:
                for file in pair:
                    check_new_file(file, overwrite)
            except OutputError as exc:
                present = [_exists(f) for f in pair] if not overwrite else [True, True]
                if present.count(True) == 1:  # a map without its overlay (or the reverse): left by a kill
                    have, lack = (pair[0], pair[1]) if present[0] else (pair[1], pair[0])
                    refused[i] = (f"{have}: exists without its {lack.name} (left by an interrupted run?); pass "
                                  "--overwrite to compute it again, or remove it")
                else:
                    refused[i] = str(exc)
    todo = [i for i in range(len(paths)) if i not in refused]
    return FilePlan(stems, refused, [todo[s : s + batch_size] for s in range(0, len(todo), batch_size)])


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
            data = contents[i] if contents is not None else None
            loaded.append((result, load_image(path, explainer.input_size, data=data)))
        except OpticamError as exc:
            result.error = str(exc)
        results.append(result)
    if not loaded:
        return results
    images = np.stack([img.pixels for _, img in loaded])
    try:
        explanation = explainer.explain(images, method=method, targets=target, progress=progress, **(options or {}))
    except OpticamError as exc:
        for result, _ in loaded:
            result.error = str(exc)
        return results
    per_image = explanation.seconds / len(loaded)
    for i, (result, img) in enumerate(loaded):
        # seconds: this image's share of its batch's wall time; the batch's own time beside it
        result.record = {
            "image": result.image,
            **explanation.record(i),
            "seconds": per_image,
            "batch_seconds": explanation.seconds,
            "batch_images": len(loaded),
        }
        result.saliency = explanation.maps[i]
        if render_overlay:
            result.overlay_png = _png_bytes(overlay(img.original, result.saliency))
        else:
            result.original = img.original
    return results


def _png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> the PNG file the overlay writer would write, as bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def write_outputs(result: FileResult, method: str, stem: str, out: Path | None, overwrite: bool = False) -> None:
    """Write an explained result's ``<stem>.<method>.npy`` (float32 map at model resolution) and
    ``<stem>.<method>.png`` (overlay at the original resolution, longest side capped) into
    ``out``, each atomically, and put their paths in its record (None without ``out``).

    The two files are written as a unit (``outputs.write_files``): both or neither, also when
    the run is interrupted (Ctrl-C, SIGTERM) between them. A failed write becomes the image's
    error (its record is dropped). Results that already have an error are left alone.

    With ``out``, the result then drops its arrays (the overlay photo, up to 2048 px: about
    12.5 MB an image; the map; the encoded overlay), which are on disk now, so a run's memory
    does not grow with its number of images: 145 photos of 2048 px had peaked at 2.6 GB when
    every result kept its photo to the end. Without ``out`` the map stays, for the caller.
    """
    if result.record is None:
        return
    if out is None:
        result.record.update(map=None, overlay=None)
        return
    from PIL import Image

    npy, png = output_paths(out, stem, method)
    saliency = result.saliency.astype(np.float32)
    try:
        if result.overlay_png is not None:
            encoded = result.overlay_png
            write_png = lambda f: f.write(encoded)  # noqa: E731
        else:
            picture = overlay(result.original, result.saliency)
            write_png = lambda f: Image.fromarray(picture).save(f, format="PNG")  # noqa: E731
        write_files([(npy, lambda f: np.save(f, saliency)), (png, write_png)], overwrite)
    except OutputError as exc:
        result.error, result.record = str(exc), None
        return
    finally:
        result.saliency = result.original = result.overlay_png = None
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
    overwrite: bool = False,
    **options: Any,
) -> list[FileResult]:
    """Explain every readable file; unreadable files, bad targets and failed writes become FileResult errors.

    Writes ``<stem>.<method>.npy`` (float32 map at model resolution) and ``<stem>.<method>.png``
    (overlay at the original resolution, longest side capped) into ``out_dir`` when given, each
    batch's as soon as it is computed (before ``on_result``); the returned results then hold
    records only, no arrays (see :func:`write_outputs`). Each file is written atomically. An existing output is never replaced unless ``overwrite``: the
    image is reported as an error before any work is done for it. Results come in input order.

    Raises:
        OutputError: ``out_dir`` cannot be created or written (checked before any computing).
    """
    made_out = out_dir is not None and not Path(out_dir).exists()
    out = check_writable_folder(out_dir) if out_dir is not None else None
    try:
        plan = plan_files(paths, method, batch_size, out, overwrite)
        results: list[FileResult | None] = [None] * len(paths)
        for i, error in plan.refused.items():
            results[i] = FileResult(str(paths[i]), error=error)
            if on_result:
                on_result(results[i])
        for batch in plan.batches:
            done = explain_batch(explainer, [paths[i] for i in batch], method, target, options, progress=progress)
            for i, result in zip(batch, done):
                write_outputs(result, method, plan.stems[i], out, overwrite)
                results[i] = result
                if on_result:
                    on_result(result)
        return [r for r in results if r is not None]
    finally:
        if made_out and out is not None and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # made only for the writing check, and nothing was written
