"""Per-image results as a JSON-lines file, so that an interrupted evaluation run resumes where it stopped.

Each record is one JSON object on one line, holding at least ``"method"`` (str) and
``"image"`` (str: the image path) plus any metric values, and, when written by an evaluation
run, ``"produced_by"``: what produced it (see :func:`produced_by`). A resumed run reuses a record
only when its ``produced_by`` equals the run's exactly; records of other settings stay in the
file, unused. A record is written and flushed as
soon as it is appended, so a crash loses at most the line being written. Such a truncated
last line is ignored when reading, and cut off before the next append so that it never
ends up in the middle of the file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from opticam_rt.errors import InputError, OutputError

__all__ = ["RecordStore", "produced_by", "to_jsonable"]


def produced_by(
    bundle_sha256: str,
    method: str,
    options: Mapping[str, Any],
    metrics: Mapping[str, Any],
    backend: str,
) -> dict[str, Any]:
    """What a record's numbers depend on, as a JSON-ready dict compared for exact equality.

    Args:
        bundle_sha256: the bundle's identity (``Bundle.sha256``: its manifest, which hashes every file).
        method: the saliency method's registry name.
        options: the method's options as passed to it (e.g. ``{"iterations": 100}``).
        metrics: the metric settings (metric names, insertion/deletion steps, ...).
        backend: the runtime backend that computed the maps.
    """
    from opticam_rt import __version__

    return to_jsonable({
        "bundle_sha256": bundle_sha256,
        "method": method,
        "options": dict(sorted(options.items())),
        "metrics": dict(sorted(metrics.items())),
        "backend": backend,
        "opticam_rt": __version__,
    })


def to_jsonable(value: Any) -> Any:
    """NumPy scalars and arrays to Python values, NaN/inf to None, recursively, for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN; None reads as "no value" when aggregating
    return value


class RecordStore:
    """An append-only JSON-lines store of per-image records at ``path`` (created on first append)."""

    def __init__(self, path: str | Path, *, fsync: bool = False) -> None:
        """``fsync=True`` also forces each line to disk (slower; survives power loss, not just a crash)."""
        self.path = Path(path)
        self.fsync = fsync
        self._repaired = False

    def _lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        # After the final "\n" split() leaves b""; anything else there is a line cut short.
        last = len(lines) - 1
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except RecursionError:  # a line nested thousands deep: damaged, not a crash
                raise InputError(f"{self.path}:{number}: a record nested too deeply to read; the results file is "
                                 "damaged (delete the line or the file to start again)") from None
            except (json.JSONDecodeError, UnicodeDecodeError):
                if number - 1 == last:
                    return  # crash mid-write: the partial record is dropped, the run redoes it
                raise InputError(f"{self.path}:{number}: not a JSON record; the results file is "
                                 "damaged (delete the line or the file to start again)") from None
            if not isinstance(record, dict):
                raise InputError(f"{self.path}:{number}: a record must be a JSON object")
            yield number, record

    def records(self) -> list[dict[str, Any]]:
        """All complete records, in the order they were appended."""
        return [r for _, r in self._lines()]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (r for _, r in self._lines())

    def done_keys(self) -> set[tuple[str, str]]:
        """``{(method, image)}`` of every record stored, whatever produced it."""
        return {(str(r["method"]), str(r["image"])) for r in self if "method" in r and "image" in r}

    def matching(self, key: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The records whose ``"produced_by"`` equals ``key`` exactly (the ones a resumed run may reuse)."""
        wanted = to_jsonable(key)
        return [r for r in self if r.get("produced_by") == wanted]

    def _repair(self) -> None:
        """Cut a partial last line (no newline) off, or end a complete one, before appending."""
        self._repaired = True
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        try:
            complete = isinstance(json.loads(tail), dict)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            complete = False
        with self.path.open("r+b") as f:
            if complete:
                f.seek(0, os.SEEK_END)
                f.write(b"\n")  # the record was whole, only its newline was lost
            else:
                f.truncate(cut)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record (needs ``"method"`` and ``"image"``) as one line and flush it."""
        if not isinstance(record, Mapping) or "method" not in record or "image" not in record:
            raise InputError("a record must be a mapping with 'method' and 'image' keys")
        try:
            line = json.dumps(to_jsonable(record), allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InputError(f"record for {record['method']!r} / {record['image']!r} is not "
                             f"JSON-serialisable: {exc}") from exc
        try:
            if not self._repaired:
                self._repair()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
        except OSError as exc:  # disk full, quota, a folder gone: name the file, the records so far stay
            raise OutputError(f"--records {self.path}: cannot write ({exc.strerror or exc}); the records "
                              "written so far are kept and a rerun resumes from them") from None
