"""Self-contained explainer graphs: one ONNX file per method, image in, saliency map out.

Each graph is assembled with the ``onnx`` helper API from the bundle's own graphs (forward,
grad_features, head, opticam_step): their nodes are copied in under a prefix and their
initializers keep pointing at the bundle's ``weights.bin``, so no weight is written twice.
The method arithmetic around them (targets, channel weights, bilinear upsampling as two
MatMuls, min-max with ``NORM_EPS``, Adam) is plain default-domain ONNX that mirrors
``opticam_rt/runtime/cams.py``, ``runtime/opticam.py`` and ``kernels/mask_numpy.py``.

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
from typing import TYPE_CHECKING, Any, Callable, Sequence

import onnx

from opticam_rt.constants import NORM_EPS
from opticam_rt.errors import ExportError
from opticam_rt.manifest import METHOD_METADATA
from opticam_rt.export.explainer_graphs.channel_loop import CHUNK_DEFAULTS, channel_weights
from opticam_rt.export.explainer_graphs.common import COMMON_OUTPUTS, ExplainerGraph, Sizes
from opticam_rt.export.explainer_graphs.fake_cam import fake_cam
from opticam_rt.export.explainer_graphs.gradient_cams import GRADIENT_METHODS, gradient_cam
from opticam_rt.export.explainer_graphs.opti_cam import ADAM, OPTI_DEFAULTS, opti_cam

if TYPE_CHECKING:
    from opticam_rt.bundle import Bundle

__all__ = ["COMMON_OUTPUTS", "EXPLAINER_GRAPHS", "add_explainer_graphs", "build_explainer_graphs", "describe"]

#: Method name -> graph name (file stem) of its explainer graph.
EXPLAINER_GRAPHS: dict[str, str] = {
    "opti-cam": "explain_opti_cam",
    "grad-cam": "explain_grad_cam",
    "grad-cam++": "explain_grad_cam_pp",
    "xgrad-cam": "explain_xgrad_cam",
    "layer-cam": "explain_layer_cam",
    "score-cam": "explain_score_cam",
    "ablation-cam": "explain_ablation_cam",
    "fake-cam": "explain_fake_cam",
}


def _saliency_builder(method: str) -> Callable[[ExplainerGraph], str]:
    """Method -> the function that adds its saliency map (N, H, W) in [0, 1] to a prepared graph."""
    if method == "opti-cam":
        return opti_cam  # normalises its own map inside
    if method == "fake-cam":
        return fake_cam
    if method in CHUNK_DEFAULTS:
        return lambda graph: graph.normalise(channel_weights(graph, method))
    if method in GRADIENT_METHODS:
        return lambda graph: graph.normalise(gradient_cam(graph, method))
    raise ExportError(f"no explainer graph for method {method!r}; methods: {', '.join(EXPLAINER_GRAPHS)}")


def build_explainer_graph(method: str, bundle_graphs: dict[str, onnx.ModelProto], sizes: Sizes) -> onnx.ModelProto:
    """The explainer graph of ``method`` (a key of ``EXPLAINER_GRAPHS``)."""
    build = _saliency_builder(method)
    graph = ExplainerGraph(bundle_graphs, sizes)
    graph.prepare()
    model = graph.finish(build(graph))
    onnx.helper.set_model_props(model, {METHOD_METADATA: method})  # checked at load (graph_check)
    return model


def describe(method: str, file: str, sizes: Sizes) -> dict[str, Any]:
    """The manifest entry of one explainer graph: file, inputs, outputs, defaults, parameters."""
    h, w = sizes.input_size
    inputs: dict[str, Any] = {
        "image": {"dtype": "float32", "shape": ["N", 3, h, w], "doc": "pixels in [0, 1]"},
        "target": {"dtype": "int64", "shape": ["N"], "default": -1, "doc": "class to explain, -1 = top-1"},
    }
    outputs: dict[str, Any] = {
        "map": {"dtype": "float32", "shape": ["N", h, w]},
        "explained_target": {"dtype": "int64", "shape": ["N"], "doc": "the class explained"},
        "score": {"dtype": "float32", "shape": ["N"], "doc": "softmax probability of target on image"},
        "masked_score": {"dtype": "float32", "shape": ["N"], "doc": "softmax probability of target on image * map"},
        "logits": {"dtype": "float32", "shape": ["N", sizes.num_classes]},
    }
    parameters: dict[str, Any] = {}
    if method == "opti-cam":
        inputs["iterations"] = {"dtype": "int64", "shape": [], "default": OPTI_DEFAULTS["iterations"]}
        inputs["lr"] = {"dtype": "float32", "shape": [], "default": OPTI_DEFAULTS["lr"]}
        inputs["tol"] = {"dtype": "float32", "shape": [], "default": OPTI_DEFAULTS["tol"], "doc": "0 = run every step"}
        inputs["patience"] = {"dtype": "int64", "shape": [], "default": OPTI_DEFAULTS["patience"]}
        outputs["loss"] = {"dtype": "float32", "shape": ["iterations", "N"], "doc": "NaN after an image stopped"}
        outputs["steps"] = {"dtype": "int64", "shape": ["N"]}
        parameters = {"loss": "mask", "optimizer": "adam", **ADAM, "u_init": 0.0}
    elif method in CHUNK_DEFAULTS:
        inputs["chunk"] = {"dtype": "int64", "shape": [], "default": CHUNK_DEFAULTS[method], "doc": "channels per loop iteration"}
    parameters["norm_eps"] = NORM_EPS
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
