"""Evaluation data: a folder of images (optionally one sub-folder per class) or a CSV of paths, labels and boxes.

Two sources are understood by :func:`load_samples`:

* **A folder.** Images directly in it have no label (the caller uses the model's top-1
  class). Images under a sub-folder (at any depth below it) take the sub-folder's name as
  their label: an integer class index (``"207"``) or a class name resolved against
  ``class_names`` (``"golden retriever"``, or an ImageNet synset id if that is what the list
  holds).
* **A CSV file** with a header holding ``path`` and ``label`` and optionally ``x0, y0, x1, y1``.
  Paths are relative to the CSV's folder (absolute paths are kept). An empty label means no
  label. Several rows for one path give that image several boxes (all rows of a path must
  agree on the label). Boxes are in the original image's pixels, inclusive-exclusive. A box
  that cannot be used (not a number, infinite, empty, out of range) is that image's problem,
  kept with the CSV line that gave it (``Sample.box_problems``): the evaluation reports it as
  that image's error and goes on.

Labels are resolved the same way in both: first an exact match in ``class_names``, then an
integer index (checked against ``len(class_names)`` when the list is given). Anything else
is an InputError naming the file (or folder) and the label.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opticam_rt.errors import InputError

__all__ = ["IMAGE_EXTENSIONS", "Sample", "load_csv", "load_folder", "load_samples", "resolve_label"]

#: File name endings (lower case) taken as images when scanning a folder.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})

_BOX_COLUMNS = ("x0", "y0", "x1", "y1")


@dataclass
class Sample:
    """One evaluation image: its path, class index (None: use top-1) and ground-truth boxes.

    ``boxes`` holds ``(x0, y0, x1, y1)`` int tuples in the original image's pixels,
    inclusive-exclusive; empty when the image has none. ``box_sources``: where each box came
    from (``file.csv:line``), for errors; ``box_problems``: one message per box that could not
    be read (the image is then reported, not scored, when localisation metrics are asked for).
    """

    path: Path
    label: int | None
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    box_sources: list[str] = field(default_factory=list, compare=False)
    box_problems: list[str] = field(default_factory=list)
    #: sha256 of the file's content when the run was planned (``evaluation.runner.fingerprint``);
    #: None until then, or when the file could not be read.
    sha256: str | None = field(default=None, compare=False)


def resolve_label(label: str, class_names: Sequence[str] | None, where: str) -> int:
    """Class index for ``label`` (a class name or an integer index); ``where`` names the source for errors."""
    text = label.strip()
    if class_names is not None:
        # A name first: a class literally named "1" must not be read as index 1.
        for i, name in enumerate(class_names):
            if name == text:
                return i
    try:
        index = int(text)
    except ValueError:
        if class_names is None:
            raise InputError(f"{where}: label {text!r} is not a class index; pass the list of class "
                             "names to resolve class names") from None
        raise InputError(f"{where}: unknown label {text!r}: not one of the {len(class_names)} class "
                         "names nor an integer class index") from None
    if index < 0 or (class_names is not None and index >= len(class_names)):
        bound = f" (0..{len(class_names) - 1})" if class_names is not None else ""
        raise InputError(f"{where}: class index {index} is out of range{bound}")
    return index


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_folder(folder: str | Path, class_names: Sequence[str] | None = None) -> list[Sample]:
    """Samples from a folder (see the module docstring), sorted by path; InputError if it holds no image."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder")
    samples = [Sample(p, None) for p in sorted(root.iterdir()) if _is_image(p)]
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        images = sorted(p for p in sub.rglob("*") if _is_image(p))
        if not images:
            continue  # a folder with no image (e.g. notes) needs no resolvable name
        label = resolve_label(sub.name, class_names, f"{sub} (class folder)")
        samples.extend(Sample(p, label) for p in images)
    if not samples:
        raise InputError(f"{root} holds no image (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return samples


#: Largest box coordinate taken, in pixels (any photo Pillow decodes is far smaller).
MAX_BOX_COORDINATE = 10**9


def parse_box(values: Sequence[str], where: str) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 as text -> int pixels; InputError naming ``where`` and the values otherwise."""
    printable = [v if v.isprintable() else ascii(v) for v in values]  # a newline in a cell stays on one line
    shown = ", ".join(v if len(v) <= 24 else v[:21] + "..." for v in printable)
    if not all(values):
        raise InputError(f"{where}: a box needs all of x0, y0, x1, y1, got ({shown})")
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise InputError(f"{where}: box coordinates must be numbers, got ({shown})") from None
    if not all(math.isfinite(v) and abs(v) <= MAX_BOX_COORDINATE for v in numbers):
        raise InputError(f"{where}: box coordinates must be finite pixel positions (at most "
                         f"{MAX_BOX_COORDINATE:.0e}), got ({shown})")
    x0, y0, x1, y1 = (int(round(v)) for v in numbers)
    if x0 < 0 or y0 < 0 or x1 <= x0 or y1 <= y0:
        raise InputError(f"{where}: box {(x0, y0, x1, y1)} is empty or negative "
                         "(x0, y0, x1, y1 are inclusive-exclusive pixels of the original image)")
    return (x0, y0, x1, y1)


def load_csv(csv_path: str | Path, class_names: Sequence[str] | None = None) -> list[Sample]:
    """Samples from a CSV file (see the module docstring), in order of first appearance."""
    path = Path(csv_path)
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    base = path.parent
    samples: dict[Path, Sample] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: tolerate a BOM from spreadsheets
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        if "path" not in header or "label" not in header:
            raise InputError(f"{path}: the header must hold 'path' and 'label' columns, got {header}")
        present = [c for c in _BOX_COLUMNS if c in header]
        if present and len(present) != 4:
            raise InputError(f"{path}: box columns must be all of x0, y0, x1, y1, got only {present}")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            rel = (row.get("path") or "").strip()
            if not rel:
                raise InputError(f"{where}: empty path")
            image = Path(rel) if Path(rel).is_absolute() else base / rel
            if not image.is_file():
                raise InputError(f"{where}: image {image} does not exist")
            raw = (row.get("label") or "").strip()
            label = resolve_label(raw, class_names, where) if raw else None
            values = [(row.get(c) or "").strip() for c in _BOX_COLUMNS] if present else []
            box, problem = None, None
            if any(values):
                try:
                    box = parse_box(values, where)
                except InputError as exc:  # this image's error, not the whole file's
                    problem = str(exc)
            sample = samples.get(image)
            if sample is None:
                sample = samples[image] = Sample(image, label)
            elif sample.label != label:
                raise InputError(f"{where}: {rel} has label {raw!r} here but {sample.label!r} on an "
                                 "earlier row")
            if box is not None:
                sample.boxes.append(box)
                sample.box_sources.append(where)
            if problem is not None:
                sample.box_problems.append(problem)
    if not samples:
        raise InputError(f"{path} lists no image")
    return list(samples.values())


def load_samples(source: str | Path, class_names: Sequence[str] | None = None) -> list[Sample]:
    """Samples from a folder or a ``.csv`` file; ``class_names`` resolves label names to indices."""
    src = Path(source)
    if src.is_dir():
        return load_folder(src, class_names)
    if src.is_file() and src.suffix.lower() == ".csv":
        return load_csv(src, class_names)
    if not src.exists():
        raise InputError(f"{src} does not exist")
    raise InputError(f"{src} is neither a folder of images nor a .csv file")
