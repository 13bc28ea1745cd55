"""Check a bundle graph file against the manifest: a readable ONNX model with the declared inputs and outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opticam_rt.errors import BundleError

from opticam_rt.manifest import Manifest


def expected_dims(manifest: Manifest) -> dict[str, tuple[int, ...]]:
    """Tensor name -> its sizes after the batch dimension, as the manifest describes them."""
    h, w = manifest.input_size
    k, fh, fw = manifest.tap_shape
    c = manifest.num_classes
    return {
        "image": (3, h, w),
        "grad_image": (3, h, w),
        "features": (k, fh, fw),
        "grad_features": (k, fh, fw),
        "u": (k,),
        "grad_u": (k,),
        "logits": (c,),
        "cotangent": (c,),
        "score": (),
        "map": (h, w),
    }


def _dims(value_info: Any) -> list[int | None]:
    """Sizes of a graph input/output; None where symbolic (the batch)."""
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def check_graph_io(
    path: Path,
    name: str,
    manifest: Manifest,
    signature: tuple[tuple[str, ...], tuple[str, ...]] | None,
    bundle_files: set[str],
    method: str | None = None,
) -> None:
    """Parse ``path`` (weights not loaded) and compare it with the manifest.

    Checks that the file is an ONNX model, that its inputs and outputs are ``signature`` (when
    the graph is one the runtime knows), that every tensor named in :func:`expected_dims` has
    those sizes after its batch dimension, and that external weights come only from files
    the manifest lists. For an explainer graph (``method`` given), every input counts, those
    with defaults included, and the method the graph records in its metadata must be ``method``.

    Raises:
        BundleError: one line naming the file and the mismatch.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeError, ... on garbage
        raise BundleError(f"{path}: not a readable ONNX model ({type(exc).__name__}); re-export the bundle") from None
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if method is not None or i.name not in initializers]
    if signature is not None:
        got = (tuple(i.name for i in inputs), tuple(o.name for o in graph.output))
        if got != signature:
            raise BundleError(
                f"{path}: graph {name!r} has inputs {list(got[0])} and outputs {list(got[1])}, "
                f"the bundle format needs {list(signature[0])} and {list(signature[1])}"
            )
    if method is not None:
        from opticam_rt.manifest import METHOD_METADATA

        recorded = {p.key: p.value for p in model.metadata_props}.get(METHOD_METADATA)
        if recorded is not None and recorded != method:  # bundles exported before it was written have none
            raise BundleError(f"{path}: the explainer graph of {recorded!r} is listed as the graph of {method!r} (file swapped); "
                              "re-export the bundle")
    wanted = expected_dims(manifest)
    for info in [*inputs, *graph.output]:
        if info.name not in wanted:
            continue
        dims = _dims(info)
        expected = wanted[info.name]
        if len(dims) != len(expected) + 1 or any(d is not None and d != e for d, e in zip(dims[1:], expected)):
            raise BundleError(
                f"{path}: {info.name!r} of graph {name!r} has shape {['N' if d is None else d for d in dims]}, "
                f"the manifest describes (N, {', '.join(map(str, expected))}) (manifest or graph altered)"
            )
    for tensor in graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in bundle_files:
                raise BundleError(f"{path}: weights read from {entry.value!r}, a file the manifest does not list")
