"""Resumable sanity-check records: JSON lines, each tagged with the key of what produced it.

A key is a plain dict of everything that produced a record (the bundle's file hashes or the
model's fingerprint, the method and its options, the check's settings, the opticam-rt version);
records whose key id differs from the current run's are ignored, so changing any of those
redoes the work instead of mixing old and new results.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from opticam_rt.errors import InputError

__all__ = ["SanityRecords", "key_id", "record_key"]


def record_key(check: str, produced_by: Mapping[str, Any], method: str, options: Mapping[str, Any],
               settings: Mapping[str, Any]) -> dict[str, Any]:
    """The key dict of one check's records for one method (``produced_by``: bundle hashes or fingerprints)."""
    from opticam_rt import __version__

    return {
        "check": check,
        "produced_by": dict(produced_by),
        "method": method,
        "options": dict(options),
        "settings": dict(settings),
        "version": __version__,
    }


def key_id(key: Mapping[str, Any]) -> str:
    """A short stable digest of a key dict (sorted JSON, sha256, 16 hex digits)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class SanityRecords:
    """An append-only JSON-lines file of per-image records, each with a ``"key"`` id."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> list[dict[str, Any]]:
        """Every complete record; a line cut short by a crash (the last one) is dropped."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").split("\n")
        out = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):
                    break
                raise InputError(f"{self.path}:{number}: not a JSON record; delete the line or the file") from None
            if isinstance(record, dict):
                out.append(record)
        return out

    def for_key(self, key: str) -> list[dict[str, Any]]:
        """The records written under key id ``key``, the last one winning per (image, step)."""
        latest: dict[tuple[str, Any], dict[str, Any]] = {}
        for r in self.read():
            if r.get("key") == key:
                latest[(str(r.get("image")), r.get("step"))] = r
        return list(latest.values())

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append records (each already holding its ``"key"``), one line each, flushed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb+") as f:
                f.seek(-1, 2)
                if f.read(1) != b"\n":  # a crash cut the last line: drop it before appending
                    data = self.path.read_bytes()
                    f.truncate(data.rfind(b"\n") + 1)
        with self.path.open("a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n")
            f.flush()
