"""The schema of a bundle's manifest.json: types and ranges of every field, checked before use."""

from __future__ import annotations

import math
import re
from typing import Any, Callable

#: Largest input side accepted (pixels); far above any classifier, low enough to stop absurd values.
MAX_INPUT_SIDE = 16384
#: Oldest ONNX opset a bundle can use (the exporter refuses anything older).
MIN_OPSET = 17
_SHA256 = re.compile(r"[0-9a-f]{64}")

Check = Callable[[Any], str | None]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _ints(n: int, low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list) or len(value) != n or not all(_is_int(v) and low <= v <= high for v in value):
            return f"must be a list of {n} integers in {low}..{high}, got {value!r:.80}"
        return None

    return check


def _floats(n: int, nonzero: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list) or len(value) != n or not all(_is_number(v) for v in value):
            return f"must be a list of {n} finite numbers, got {value!r:.80}"
        if nonzero and any(v == 0 for v in value):
            return f"must not contain 0, got {value!r:.80}"
        return None

    return check


def _int_in(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        return None if _is_int(value) and low <= value <= high else f"must be an integer in {low}..{high}, got {value!r:.80}"

    return check


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) and value else f"must be a non-empty string, got {value!r:.80}"


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _string_map(value: Any) -> str | None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return f"must be an object of strings, got {value!r:.80}"
    return None


def _object(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"must be an object or null, got {value!r:.80}"


def plain_file_name(name: Any) -> bool:
    """A file name inside the bundle folder: no folders, no '..', not hidden."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def _explainers(value: Any) -> str | None:
    """method -> {"file": plain .onnx name, "inputs", "outputs", "defaults", "parameters": objects}."""
    if not isinstance(value, dict):
        return f"must be an object, got {value!r:.80}"
    for method, entry in value.items():
        file = entry.get("file") if isinstance(entry, dict) else None
        if not plain_file_name(file) or not file.endswith(".onnx"):
            return f"entry {method!r:.40} needs a 'file' that is a plain .onnx file name inside the bundle"
        for key in ("inputs", "outputs", "defaults", "parameters"):
            if not isinstance(entry.get(key), dict):
                return f"entry {method!r:.40} needs an object {key!r}"
    return None


def _tokens(value: Any) -> str | None:
    """A token tap's layout: {"prefix": int >= 0, "height": int >= 1, "width": int >= 1}."""
    keys = {"prefix": 0, "height": 1, "width": 1}
    if not isinstance(value, dict) or set(value) != set(keys):
        return f"must be an object with prefix, height and width, got {value!r:.80}"
    for key, low in keys.items():
        v = value[key]
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= MAX_INPUT_SIDE:
            return f"{key} must be an integer in {low}..{MAX_INPUT_SIDE}, got {v!r:.40}"
    return None


#: field -> (required, check). Order is the order problems are reported in.
FIELDS: dict[str, tuple[bool, Check]] = {
    "schema_version": (True, _int_in(1, 1 << 30)),
    "model_name": (True, _string),
    "input_size": (True, _ints(2, 1, MAX_INPUT_SIDE)),
    "mean": (True, _floats(3)),
    "std": (True, _floats(3, nonzero=True)),
    "tap_layer": (True, _string),
    "tap_shape": (True, _ints(3, 1, 1 << 20)),
    "tap_tokens": (False, _optional(_tokens)),
    "tap_layout": (False, lambda v: None if v in ("channels-first", "channels-last")
                   else f"must be 'channels-first' or 'channels-last', got {v!r:.40}"),
    "num_classes": (True, _int_in(1, 1 << 24)),
    "opset": (True, _int_in(MIN_OPSET, 1000)),
    "class_names": (False, _optional(lambda v: None if isinstance(v, list) and all(isinstance(n, str) for n in v)
                                      else f"must be a list of strings, got {v!r:.80}")),
    "model_spec": (False, _optional(_string)),
    "graphs": (True, _string_map),
    "explainers": (False, _explainers),
    "files": (True, lambda v: None if isinstance(v, dict) else f"must be an object, got {v!r:.80}"),
    "producer": (False, _string_map),
    "verification": (False, _optional(_object)),
}


def check_manifest(data: Any, required_graphs: tuple[str, ...], weights: str) -> str | None:
    """The first problem of a parsed manifest as a short phrase, or None when it is valid.

    Besides each field's type and range: ``class_names`` has ``num_classes`` entries; ``graphs``
    names every graph in ``required_graphs`` (more may be listed: each is checked the same way)
    with a plain ``.onnx`` file name; ``files`` records a sha256 and a byte count for every graph
    file and for ``weights``, so an emptied ``files`` cannot switch hash checking off.
    """
    if not isinstance(data, dict):
        return f"must be a JSON object, got {type(data).__name__}"
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        return f"unknown field {unknown[0]!r}"
    for name, (required, check) in FIELDS.items():
        if name not in data:
            if required:
                return f"field {name!r} is missing"
            continue
        problem = check(data[name])
        if problem:
            return f"field {name!r} {problem}"
    names = data.get("class_names")
    if names is not None and len(names) != data["num_classes"]:
        return f"{len(names)} class_names for num_classes {data['num_classes']}"
    graphs: dict[str, str] = data["graphs"]
    missing = [g for g in required_graphs if g not in graphs]
    if missing:
        return f"graph {missing[0]!r} is not listed in 'graphs'"
    for graph, file in graphs.items():
        if not plain_file_name(file) or not file.endswith(".onnx"):
            return f"graph {graph!r} file {file!r} must be a plain .onnx file name inside the bundle"
    files: dict[str, Any] = data["files"]
    explainer_files = [entry["file"] for entry in data.get("explainers", {}).values()]
    for file in [*graphs.values(), *explainer_files, weights]:
        if file not in files:
            return f"file {file!r} has no sha256 in 'files'"
    for file, info in files.items():
        if not plain_file_name(file):
            return f"'files' entry {file!r:.80} is not a plain file name inside the bundle"
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) or not _SHA256.fullmatch(info["sha256"]):
            return f"'files' entry {file!r} needs a 64-hex-digit 'sha256'"
        if not _is_int(info.get("bytes")) or info["bytes"] < 0:
            return f"'files' entry {file!r} needs a non-negative integer 'bytes'"
    return None
