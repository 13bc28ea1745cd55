"""Self-contained explainer graphs: one ONNX file per method, image in, saliency map out.

Each graph is assembled with the ``onnx`` helper API from the bundle's own graphs (forward,
grad_features, head, opticam_step): their nodes are copied in under a prefix and their
initializers keep pointing at the bundle's ``weights.bin``, so no weight is written twice.
The method arithmetic around them (targets, channel weights, bilinear upsampling as two
MatMuls, min-max with ``NORM_EPS``, Adam) is plain default-domain ONNX written by each method's
registration (``Method.graph`` in ``opticam_rt.methods``), next to the host code it mirrors; this
module assembles the graphs and describes them in the manifest.

Contract of every graph (the manifest's ``explainers`` entry repeats it):
    inputs:  image (N, 3, H, W) float32 in [0, 1]; target (N,) int64, -1 = top-1 class
             (default -1 for every image; a single value is broadcast to the batch).
    outputs: map (N, H, W) in [0, 1]; explained_target (N,) int64; score, masked_score (N,): the
             target's softmax probability on x and on x * map; logits (N, C).
    Opti-CAM adds inputs iterations (int64 scalar), lr, tol (float32 scalars, tol 0 = every
    step runs), patience (int64 scalar) and outputs loss (iterations, N; NaN once an image
    stopped) and steps (N,). Score-CAM and Ablation-CAM add chunk (int64 scalar): channels
    per loop iteration. Every extra input has its default stored as an initializer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import onnx

from opticam_rt.constants import NORM_EPS
from opticam_rt.errors import ExportError
from opticam_rt.manifest import METHOD_METADATA
from opticam_rt.methods import REGISTRY, Method
from opticam_rt.methods.graph.explainer_graph import COMMON_OUTPUTS, ExplainerGraph, Sizes

if TYPE_CHECKING:
    from opticam_rt.bundle import Bundle

__all__ = ["COMMON_OUTPUTS", "EXPLAINER_GRAPHS", "add_explainer_graphs", "build_explainer_graphs", "describe"]

#: Method name -> graph name (file stem) of its explainer graph, for every method that has one.
EXPLAINER_GRAPHS: dict[str, str] = {name: m.graph_file for name, m in REGISTRY.items() if m.graph is not None}


def _record(method: str) -> Method:
    if method not in EXPLAINER_GRAPHS:
        raise ExportError(f"no explainer graph for method {method!r}; methods: {', '.join(EXPLAINER_GRAPHS)}")
    return REGISTRY[method]


def build_explainer_graph(method: str, bundle_graphs: dict[str, onnx.ModelProto], sizes: Sizes) -> onnx.ModelProto:
    """The explainer graph of ``method`` (a key of ``EXPLAINER_GRAPHS``)."""
    record = _record(method)
    graph = ExplainerGraph(bundle_graphs, sizes, record.graph_inputs())
    graph.prepare()
    model = graph.finish(record.graph(graph))  # type: ignore[misc]
    onnx.helper.set_model_props(model, {METHOD_METADATA: method})  # checked at load (graph_check)
    return model


def describe(method: str, file: str, sizes: Sizes) -> dict[str, Any]:
    """The manifest entry of one explainer graph: file, inputs, outputs, defaults, parameters."""
    record = _record(method)
    h, w = sizes.input_size
    inputs: dict[str, Any] = {
        "image": {"dtype": "float32", "shape": ["N", 3, h, w], "doc": "pixels in [0, 1]"},
        "target": {"dtype": "int64", "shape": ["N"], "default": -1, "doc": "class to explain, -1 = top-1"},
    }
    helps = {info.name: info.spec.help for info in record.Options.infos()}
    for name, (default, dtype) in record.graph_inputs().items():
        unset = "" if record.graph_options[name] is None else f" {default!r} = unset."
        inputs[name] = {"dtype": str(dtype), "shape": [], "default": default, "doc": helps[name] + unset}
    outputs: dict[str, Any] = {
        "map": {"dtype": "float32", "shape": ["N", h, w]},
        "explained_target": {"dtype": "int64", "shape": ["N"], "doc": "the class explained"},
        "score": {"dtype": "float32", "shape": ["N"], "doc": "softmax probability of target on image"},
        "masked_score": {"dtype": "float32", "shape": ["N"], "doc": "softmax probability of target on image * map"},
        "logits": {"dtype": "float32", "shape": ["N", sizes.num_classes]},
    }
    outputs.update({name: dict(spec) for name, spec in record.graph_outputs.items()})
    parameters: dict[str, Any] = {**record.graph_parameters, "norm_eps": NORM_EPS}
    return {
        "file": file,
        "inputs": inputs,
        "outputs": outputs,
        "defaults": {name: spec["default"] for name, spec in inputs.items() if "default" in spec},
        "parameters": parameters,
    }


def build_explainer_graphs(
    bundle_graphs: dict[str, onnx.ModelProto],
    input_size: tuple[int, int],
    tap_shape: tuple[int, int, int],
    num_classes: int,
    methods: Sequence[str] | None = None,
) -> tuple[dict[str, onnx.ModelProto], dict[str, dict[str, Any]]]:
    """Every explainer graph from the bundle's graphs (their weights already external).

    Returns:
        (graph name -> model, method -> manifest entry).
    """
    sizes = Sizes(tuple(input_size), (tap_shape[1], tap_shape[2]), tap_shape[0], num_classes)  # type: ignore[arg-type]
    models, entries = {}, {}
    for method in methods or EXPLAINER_GRAPHS:
        if method not in EXPLAINER_GRAPHS:
            raise ExportError(f"no explainer graph for method {method!r}; methods: {', '.join(EXPLAINER_GRAPHS)}")
        name = EXPLAINER_GRAPHS[method]
        models[name] = build_explainer_graph(method, bundle_graphs, sizes)
        entries[method] = describe(method, f"{name}.onnx", sizes)
    return models, entries


def add_explainer_graphs(directory: str | Path) -> Bundle:
    """Write the explainer graphs into an existing bundle (exported without them) and update its manifest."""
    from opticam_rt.bundle import load_bundle, write_manifest

    bundle = load_bundle(directory)
    m = bundle.manifest
    graphs = {name: onnx.load(str(bundle.graph_path(name)), load_external_data=False) for name in m.graphs}
    models, entries = build_explainer_graphs(graphs, m.input_size, m.tap_shape, m.num_classes)
    for name, model in models.items():
        onnx.save(model, str(bundle.path / f"{name}.onnx"))
    m.explainers = entries
    write_manifest(bundle.path, m)
    return load_bundle(bundle.path)
