"""The explainer bundle on disk: manifest.json, the ONNX graphs and one shared weights file."""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opticam_rt.errors import BundleError, InputError, UnverifiedBundleWarning
from opticam_rt.graph_check import check_graph_io
from opticam_rt.manifest import (  # noqa: F401 - re-exported: the bundle's public names
    GRAPH_SIGNATURES,
    MANIFEST,
    SCHEMA_VERSION,
    WEIGHTS,
    Manifest,
    graph_input_shapes,
)
from opticam_rt.methods import REGISTRY


def check_input_size(size: Any, option: str = "--input-size") -> tuple[int, int]:
    """``size`` as (H, W) when both are integers in 1..MAX_INPUT_SIDE; otherwise a one-line InputError."""
    from opticam_rt.manifest_schema import MAX_INPUT_SIDE

    try:
        h, w = size
        ok = all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INPUT_SIDE for v in (h, w))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{option} {size!r}: height and width must be integers in 1..{MAX_INPUT_SIDE}")
    return int(h), int(w)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A loaded, hash-checked bundle directory."""

    path: Path
    manifest: Manifest
    #: sha256 of manifest.json, which records the sha256 of every file: the bundle's identity.
    sha256: str = ""

    def graph_path(self, name: str) -> Path:
        if name not in self.manifest.graphs:
            raise BundleError(f"{self.path}: bundle has no graph {name!r} (has {sorted(self.manifest.graphs)})")
        return self.path / self.manifest.graphs[name]

    def explainer_path(self, method: str) -> Path:
        if method not in self.manifest.explainers:
            raise BundleError(
                f"{self.path}: bundle has no explainer graph for {method!r} (has {sorted(self.manifest.explainers)}); "
                "re-export it with explainer graphs"
            )
        return self.path / self.manifest.explainers[method]["file"]

    def class_name(self, index: int) -> str | None:
        names = self.manifest.class_names
        return names[index] if names and 0 <= index < len(names) else None


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Hash every file the manifest lists and write manifest.json."""
    names = [*manifest.graphs.values(), *(entry["file"] for entry in manifest.explainers.values()), WEIGHTS]
    manifest.files = {
        name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size} for name in names
    }
    (directory / MANIFEST).write_text(manifest.to_json())


def load_bundle(directory: str | Path, check_hashes: bool = True) -> Bundle:
    """Read and check a bundle: the manifest against its schema, every file present, sizes and
    sha256 as recorded, each graph a readable ONNX model whose inputs and outputs (names and
    sizes) are those the manifest describes.

    Warns:
        UnverifiedBundleWarning: the bundle's parity check against PyTorch failed or did not
            finish at export (a bundle exported with ``--no-verify`` loads silently).

    Raises:
        BundleError: one line naming the file that is missing, truncated, altered or malformed.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        raise BundleError(f"{directory}: not a bundle directory (run `opticam-rt export` to make one)")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; {directory} is not a complete bundle")
    try:
        raw = manifest_path.read_bytes()
        data = json.loads(raw)
    except OSError as exc:
        raise BundleError(f"{manifest_path}: cannot be read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from None
    manifest = Manifest.from_dict(data, manifest_path)
    for name, info in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle")
        size = path.stat().st_size
        if size != info["bytes"]:
            raise BundleError(f"{path}: {size} bytes, the manifest records {info['bytes']} (truncated or replaced)")
        if check_hashes and sha256_file(path) != info["sha256"]:
            raise BundleError(f"{path}: sha256 does not match the manifest (file altered)")
    for name, file in manifest.graphs.items():
        check_graph_io(directory / file, name, manifest, GRAPH_SIGNATURES.get(name), set(manifest.files))
    for method, entry in manifest.explainers.items():
        path = directory / entry["file"]
        record = REGISTRY.get(method)
        if record is None or record.graph is None:
            raise BundleError(f"{manifest_path}: explainer graph for unknown method {method!r:.40} "
                              f"(known: {', '.join(m for m, r in REGISTRY.items() if r.graph is not None)})")
        signature = record.graph_signature()
        listed = (tuple(entry["inputs"]), tuple(entry["outputs"]))
        if (set(listed[0]), set(listed[1])) != (set(signature[0]), set(signature[1])):
            raise BundleError(f"{manifest_path}: the {method} explainer entry lists inputs {list(listed[0])} and outputs "
                              f"{list(listed[1])}, the bundle format needs {list(signature[0])} and {list(signature[1])}")
        if entry["file"] not in manifest.files:
            raise BundleError(f"{manifest_path}: the {method} explainer graph {entry['file']} has no recorded sha256")
        check_graph_io(path, f"explain {method}", manifest, signature, set(manifest.files), method=method)
    _warn_if_unverified(directory, manifest.verification)
    return Bundle(directory, manifest, hashlib.sha256(raw).hexdigest())


#: ``verification`` written into the manifest while the parity check runs; the final report
#: replaces it. A bundle still holding it was interrupted during verification.
VERIFICATION_RUNNING = {"status": "running"}


def _warn_if_unverified(directory: Path, verification: dict[str, Any] | None) -> None:
    if verification is None:
        return  # exported with --no-verify: the user chose it, nothing to warn about
    if verification.get("status") == VERIFICATION_RUNNING["status"]:
        why = "its parity check against PyTorch did not finish at export (interrupted)"
    elif verification.get("passed") is False:
        why = "its parity check against PyTorch FAILED at export (maps may be wrong or NaN)"
    else:
        return
    warnings.warn(UnverifiedBundleWarning(f"{directory}: {why}; re-export it, or check its maps"), stacklevel=3)
