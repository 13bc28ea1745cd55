"""The registration record: everything every engine needs of one saliency method, in one place.

A method module (``methods/grad_cam.py``, ...) defines its options, its host implementation, its
explainer-graph builder and its PyTorch reference, and ends with one ``Method(...)``; the package
``__init__`` lists the modules. The runtime (``auto`` and the host engine), the graph export, the
``torch`` backend, the CLI and the parity tests all read these records, so no table keyed by
method name is kept by hand anywhere else.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from opticam_rt.methods.contract import MethodImplementation
from opticam_rt.methods.options import MethodOptions

#: The inputs and outputs every explainer graph has (an ONNX graph cannot name an output like an
#: input, so the class explained, ``target`` with -1 resolved, is ``explained_target``).
GRAPH_INPUTS = ("image", "target")
GRAPH_OUTPUTS = ("map", "explained_target", "score", "masked_score", "logits")
#: The reference's positional parameters; its keyword parameters must be options of the method.
REFERENCE_PARAMETERS = ("clf", "images", "targets", "size")


@dataclass(frozen=True)
class Method:
    """One registered saliency method.

    name: the registry key and CLI spelling (``grad-cam``).
    host: the implementation over the bundle graphs of any runner (NumPy + kernels); its
        ``Options`` dataclass declares the method's options and their defaults, once.
    reference: ``(clf, images, targets, size, **options) -> {"maps": (N, H, W), ...}`` in plain
        PyTorch, written from the paper (not from ``host``): the ``torch`` backend and what the
        parity tests compare against.
    graph: adds the saliency map (N, H, W) in [0, 1] to a prepared ``ExplainerGraph`` and returns
        its name; None only with ``no_graph`` saying why there is no explainer graph.
    graph_options: the options the explainer graph takes as scalar inputs, name -> the input's
        default where it differs from the option's (an unset ``tol`` is 0 in a graph); None keeps it.
    cpu_order: CPU backends fastest first for this method, what ``auto`` tries (measured side by
        side in docs/perf-notes.md: OpenVINO runs the backward graphs faster, ONNX Runtime the
        plain forward passes that Score-CAM, Ablation-CAM and Fake-CAM are made of).
    summary: one line for ``--help`` and the docs.
    graph_outputs: the graph's outputs beside the common ones, name -> manifest spec (dtype, shape, doc).
    graph_parameters: fixed settings of the graph that are not inputs, recorded in the manifest.
    """

    name: str
    host: type[MethodImplementation]
    reference: Callable[..., dict[str, Any]]
    graph: Callable[[Any], str] | None
    cpu_order: tuple[str, ...]
    summary: str
    graph_options: Mapping[str, Any] = field(default_factory=dict)
    graph_outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    graph_parameters: Mapping[str, Any] = field(default_factory=dict)
    no_graph: str = ""

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise TypeError(f"method {self.name!r} is registered incompletely: " + "; ".join(problems))

    @property
    def Options(self) -> type[MethodOptions]:  # noqa: N802 - the dataclass, as on the host class
        return getattr(self.host, "Options", MethodOptions)

    @property
    def graph_file(self) -> str:
        """File stem of the explainer graph: ``explain_grad_cam_pp`` for ``grad-cam++``."""
        return "explain_" + self.name.replace("++", "_pp").replace("-", "_")

    def graph_inputs(self) -> dict[str, tuple[Any, np.dtype]]:
        """The explainer graph's option inputs: name -> (default, dtype), from ``Options``."""
        infos = {info.name: info for info in self.Options.infos()}
        out = {}
        for name, override in self.graph_options.items():
            info = infos[name]
            dtype = np.dtype(np.int64 if info.kind is int else np.float32)
            out[name] = (info.default if override is None else override, dtype)
        return out

    def graph_signature(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(input names, output names) of the explainer graph, every input counted (the scalar
        options are inputs with defaults); the bundle checks each graph against it at load, so a
        graph swapped for another method's (and rehashed) is refused rather than run under the
        wrong name."""
        return (*GRAPH_INPUTS, *self.graph_options), (*GRAPH_OUTPUTS, *self.graph_outputs)

    def problems(self) -> list[str]:
        """What is missing or inconsistent; empty for a complete registration."""
        found = []
        if not self.name or self.name != self.name.lower() or " " in self.name:
            found.append(f"name {self.name!r} must be a lower-case CLI word")
        if not (isinstance(self.host, type) and issubclass(self.host, MethodImplementation)):
            found.append("host must be a MethodImplementation subclass")
        elif getattr(self.host, "name", None) != self.name:
            found.append(f"host {self.host.__name__}.name is {getattr(self.host, 'name', None)!r}")
        elif not (isinstance(self.Options, type) and issubclass(self.Options, MethodOptions)):
            found.append("host.Options must be a MethodOptions dataclass")
        else:
            unknown = set(self.graph_options) - set(self.Options.names())
            if unknown:
                found.append(f"graph_options {sorted(unknown)} are not options of the method")
        if not callable(self.reference):
            found.append("reference (the PyTorch implementation) is missing")
        else:
            params = list(inspect.signature(self.reference).parameters)
            if tuple(params[:4]) != REFERENCE_PARAMETERS:
                found.append(f"reference must take {REFERENCE_PARAMETERS} first, takes {tuple(params[:4])}")
            elif found == [] and set(params[4:]) - set(self.Options.names()):
                found.append(f"reference options {sorted(set(params[4:]) - set(self.Options.names()))} are not options")
        if self.graph is None and not self.no_graph:
            found.append("graph (the explainer-graph builder) is missing, and no_graph does not say why")
        if self.graph is not None and not callable(self.graph):
            found.append("graph must be callable")
        if not self.cpu_order:
            found.append("cpu_order (the CPU backends auto tries) is empty")
        if not self.summary:
            found.append("summary is empty")
        return found
