"""The explainer bundle on disk: manifest.json, the ONNX graphs and one shared weights file."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from opticam_rt.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.bin"

#: Graph name -> (input names, output names). The contract every runtime relies on.
GRAPH_SIGNATURES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "forward": (("image",), ("logits", "features")),
    "grad_features": (("image", "cotangent"), ("logits", "features", "grad_features")),
    "grad_image": (("image", "cotangent"), ("logits", "grad_image")),
    "head": (("features",), ("logits",)),
    "opticam_step": (("image", "features", "u", "cotangent"), ("score", "grad_u")),
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Manifest:
    """What a bundle holds. ``input_size`` is (H, W); ``tap_shape`` is (K, h, w)."""

    model_name: str
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    tap_layer: str
    tap_shape: tuple[int, int, int]
    num_classes: int
    opset: int
    #: For a transformer tap: {"prefix", "height", "width"}, the class/register tokens dropped
    #: and the patch grid the tokens were laid out on; None for a 4-D feature map.
    tap_tokens: dict[str, int] | None = None
    class_names: list[str] | None = None
    #: How to rebuild the PyTorch model for the ``torch`` reference backend: a built-in name or
    #: ``pkg.module:factory``; None when the model came from Python code with no such spec.
    model_spec: str | None = None
    graphs: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Path) -> "Manifest":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"{source}: bundle schema version {version!r}, this opticam-rt reads version {SCHEMA_VERSION}; "
                "re-export the model with `opticam-rt export`"
            )
        try:
            data = dict(data)
            data["input_size"] = tuple(data["input_size"])
            data["mean"] = tuple(data["mean"])
            data["std"] = tuple(data["std"])
            data["tap_shape"] = tuple(data["tap_shape"])
            return cls(**data)
        except (KeyError, TypeError) as exc:
            raise BundleError(f"{source}: manifest is missing or has malformed fields ({exc})") from exc


@dataclass
class Bundle:
    """A loaded, hash-checked bundle directory."""

    path: Path
    manifest: Manifest

    def graph_path(self, name: str) -> Path:
        if name not in self.manifest.graphs:
            raise BundleError(f"{self.path}: bundle has no graph {name!r} (has {sorted(self.manifest.graphs)})")
        return self.path / self.manifest.graphs[name]

    def class_name(self, index: int) -> str | None:
        names = self.manifest.class_names
        return names[index] if names and 0 <= index < len(names) else None


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Hash every file the manifest lists and write manifest.json."""
    names = [*manifest.graphs.values(), WEIGHTS]
    manifest.files = {
        name: {"sha256": sha256_file(directory / name), "bytes": (directory / name).stat().st_size} for name in names
    }
    (directory / MANIFEST).write_text(manifest.to_json())


def load_bundle(directory: str | Path, check_hashes: bool = True) -> Bundle:
    """Read and check a bundle: schema version, every file present, sizes and sha256 as recorded.

    Raises:
        BundleError: naming the file that is missing, truncated or altered.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not directory.is_dir():
        raise BundleError(f"{directory}: not a bundle directory (run `opticam-rt export` to make one)")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; {directory} is not a complete bundle")
    try:
        data = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{manifest_path}: not valid JSON ({exc})") from exc
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
    return Bundle(directory, manifest)
