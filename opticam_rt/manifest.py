"""The bundle's manifest: what manifest.json holds, the graph contract every runtime relies on,
and the input shapes derived from it. Data only: reading it never imports a model's code."""

from __future__ import annotations

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


#: Metadata key of an explainer graph naming its method (written at export, compared at load:
#: graphs of the same signature, Grad-CAM's and XGrad-CAM's, differ only in it).
METHOD_METADATA = "opticam_rt.method"


def graph_input_shapes(manifest: "Manifest") -> dict[str, dict[str, tuple[int | None, ...]]]:
    """Graph -> input -> shape, None where the batch dimension N goes; derived from the manifest.

    image (N, 3, H, W), cotangent (N, C), features (N, K, h, w), u (N, K). The exporter, the
    runners' input checks and the tests read shapes from here, so they are written once.
    """
    h, w = manifest.input_size
    k, fh, fw = manifest.tap_shape
    shapes: dict[str, tuple[int | None, ...]] = {
        "image": (None, 3, h, w),
        "cotangent": (None, manifest.num_classes),
        "features": (None, k, fh, fw),
        "u": (None, k),
    }
    return {graph: {name: shapes[name] for name in inputs} for graph, (inputs, _) in GRAPH_SIGNATURES.items()}



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
    #: "channels-last" when the tap's 4-D output is (N, h, w, K) (Swin's ``norm``), permuted to
    #: the (N, K, h, w) features inside the graphs; "channels-first" otherwise.
    tap_layout: str = "channels-first"
    class_names: list[str] | None = None
    #: How to rebuild the PyTorch model for the ``torch`` reference backend: a built-in name or
    #: ``pkg.module:factory``; None when the model came from Python code with no such spec.
    model_spec: str | None = None
    graphs: dict[str, str] = field(default_factory=dict)
    #: Method -> self-contained explainer graph: {"file", "inputs", "outputs", "defaults",
    #: "parameters"} (opticam_rt/export/explainer_graphs/); empty when exported without them.
    explainers: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    producer: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: Any, source: Path) -> "Manifest":
        """Validate ``data`` (parsed manifest.json) against the schema and build the Manifest.

        Raises:
            BundleError: one line naming ``source`` and the first field that is missing, of the
                wrong type or out of range (see :func:`opticam_rt.manifest_schema.check_manifest`).
        """
        from opticam_rt.manifest_schema import check_manifest

        if isinstance(data, dict) and data.get("schema_version") != SCHEMA_VERSION:
            raise BundleError(
                f"{source}: bundle schema version {data.get('schema_version')!r}, this opticam-rt reads version "
                f"{SCHEMA_VERSION}; re-export the model with `opticam-rt export`"
            )
        # A token tap's bundle has no head graph: the network after the tap also needs the dropped tokens.
        token_tap = isinstance(data, dict) and data.get("tap_tokens") is not None
        required = tuple(g for g in GRAPH_SIGNATURES if not (token_tap and g == "head"))
        problem = check_manifest(data, required_graphs=required, weights=WEIGHTS)
        if problem:
            raise BundleError(f"{source}: invalid manifest: {problem}; re-export the model with `opticam-rt export`")
        data = dict(data)
        for name in ("input_size", "mean", "std", "tap_shape"):
            data[name] = tuple(data[name])
        return cls(**data)
