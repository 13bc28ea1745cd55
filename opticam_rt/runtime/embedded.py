"""Run a bundle's self-contained explainer graphs (one ONNX file per method) with ONNX Runtime alone.

The whole method, Opti-CAM's Adam loop included, runs inside one ``session.run``; this module
only checks the inputs first, so a bad one is named here instead of deep inside the runtime.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from opticam_rt.bundle import WEIGHTS, Bundle, load_bundle
from opticam_rt.errors import BundleError, InputError
from opticam_rt.methods.contract import MethodContext, MethodImplementation, MethodOutput
from opticam_rt.runtime.checks import check_images, check_targets
from opticam_rt.runtime.explanation import Explanation


@dataclass
class GraphOutputs:
    """What an explainer graph returns, for N images.

    map (N, H, W) float32 in [0, 1]; target (N,) int64, the class explained; score and
    masked_score (N,), the target's softmax probability on x and on x * map; logits (N, C).
    Opti-CAM only: loss (iterations, N), NaN once an image stopped; steps (N,) Adam steps used.
    """

    map: np.ndarray
    target: np.ndarray
    score: np.ndarray
    masked_score: np.ndarray
    logits: np.ndarray
    loss: np.ndarray | None = None
    steps: np.ndarray | None = None


class GraphExplainer:
    """Saliency maps from a bundle's explainer graphs (``manifest.explainers``).

    Args:
        bundle: a bundle directory or a loaded Bundle exported with explainer graphs.
        providers: ONNX Runtime execution providers (default CPU).
        threads: intra-op threads (default: ONNX Runtime's choice, all cores).
    """

    def __init__(
        self, bundle: str | Path | Bundle, providers: Sequence[str] = ("CPUExecutionProvider",), threads: int | None = None
    ) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.providers = list(providers)
        self.threads = threads
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()  # one session per method even when threads race on first use

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.bundle.manifest.explainers)

    def session(self, method: str) -> Any:
        """The ONNX Runtime session of ``method``'s graph, created on first use (thread-safe)."""
        with self._lock:
            if method not in self._sessions:
                import onnxruntime as ort

                path = self.bundle.explainer_path(method)
                options = ort.SessionOptions()
                options.log_severity_level = 3  # the overridable defaults (inputs with initializers) warn otherwise
                if self.threads:
                    options.intra_op_num_threads = self.threads
                for needed in (path, self.bundle.path / WEIGHTS):
                    if not needed.is_file():
                        raise BundleError(f"{needed}: missing from the bundle (removed after it was loaded?); "
                                          "re-export or restore the bundle")
                try:
                    self._sessions[method] = ort.InferenceSession(str(path), options, providers=self.providers)
                except Exception as exc:  # noqa: BLE001 - ONNX Runtime's errors on a damaged or half-removed bundle
                    text = " ".join(str(exc).split())[:200]
                    raise BundleError(f"{path}: ONNX Runtime cannot load the {method} explainer graph ({text}); "
                                      "re-export the bundle") from None
            return self._sessions[method]

    def run(
        self,
        images: np.ndarray,
        method: str = "opti-cam",
        targets: Sequence[int] | np.ndarray | int | None = None,
        **options: Any,
    ) -> GraphOutputs:
        """Explain images (N, 3, H, W) float32 in [0, 1]; targets None (or -1) means top-1.

        ``options`` are the inputs the method's graph takes besides image and target, as the
        manifest lists them (Opti-CAM: iterations, lr, tol, patience; Score-CAM and Ablation-CAM:
        chunk). One left None keeps the graph's default (``manifest.explainers[method]["defaults"]``);
        an option the method's graph does not take is an error.
        """
        feeds = {"image": self.check_images(images)}
        feeds["target"] = self.check_targets(targets, len(feeds["image"]))
        feeds.update(self.check_options(method, {k: v for k, v in options.items() if v is not None}))
        session = self.session(method)
        out = dict(zip((o.name for o in session.get_outputs()), session.run(None, feeds)))
        return GraphOutputs(
            map=out["map"],
            target=out["explained_target"],
            score=out["score"],
            masked_score=out["masked_score"],
            logits=out["logits"],
            loss=out.get("loss"),
            steps=out.get("steps"),
        )

    def explain(
        self,
        images: np.ndarray,
        method: str = "opti-cam",
        targets: Sequence[int] | np.ndarray | int | None = None,
        **options: Any,
    ) -> Explanation:
        """``run`` as an ``Explanation`` (the Explainer's result type; trace is loss transposed)."""
        start = time.perf_counter()
        out = self.run(images, method, targets, **options)
        return Explanation(
            method=method,
            backend="graph",
            maps=out.map,
            targets=out.target,
            scores=out.score,
            masked_scores=out.masked_score,
            class_names=[self.bundle.class_name(int(t)) for t in out.target],
            seconds=time.perf_counter() - start,
            options={**self.bundle.manifest.explainers[method].get("defaults", {}), **options},
            engine="graph",
            trace=None if out.loss is None else np.ascontiguousarray(out.loss.T),
            iterations=out.steps,
        )

    # --- input checks (the graph would fail too, with the runtime's less direct message) ----

    def check_images(self, images: np.ndarray) -> np.ndarray:
        return check_images(images, self.bundle.manifest.input_size)

    def check_targets(self, targets: Sequence[int] | np.ndarray | int | None, n: int) -> np.ndarray:
        if targets is None:
            return np.full(n, -1, dtype=np.int64)
        return check_targets(targets, n, self.bundle.manifest.num_classes, top1=-1)

    def check_options(self, method: str, options: dict[str, Any]) -> dict[str, np.ndarray]:
        if method not in self.bundle.manifest.explainers:
            self.bundle.explainer_path(method)  # raises, naming the methods the bundle has
        inputs = self.bundle.manifest.explainers[method]["inputs"]
        feeds = {}
        for name, value in options.items():
            if name not in inputs:
                takes = [k for k in inputs if k not in ("image", "target")] or ["no options"]
                raise InputError(f"{method} explainer graph has no option {name!r}; it takes {', '.join(takes)}")
            if inputs[name]["dtype"] == "int64":
                if isinstance(value, bool) or not float(value).is_integer() or value < 1:
                    raise InputError(f"{name} must be an integer >= 1, got {value!r}")
                feeds[name] = np.array(int(value), dtype=np.int64)
            else:
                if not np.isfinite(value) or value < 0 or (name == "lr" and value == 0):
                    raise InputError(f"{name} must be a finite number {'> 0' if name == 'lr' else '>= 0'}, got {value!r}")
                feeds[name] = np.array(value, dtype=np.float32)
        return feeds


class GraphMethod(MethodImplementation):
    """One method computed by its explainer graph, behind the method contract (``Explainer(...,
    engine="graph")``): the Explainer's targets go in, the graph's map, loss and steps come out.
    It honours the options the graph takes as inputs (Opti-CAM: iterations, lr, tol, patience;
    Score-CAM and Ablation-CAM: chunk); the Explainer refuses a non-default value of any other.
    """

    def __init__(self, graphs: GraphExplainer, method: str) -> None:
        if method not in graphs.bundle.manifest.explainers:
            graphs.bundle.explainer_path(method)  # raises, naming the methods the bundle has
        self.graphs = graphs
        self.method = method
        self.honours = frozenset(graphs.bundle.manifest.explainers[method]["inputs"]) - {"image", "target"}

    def run(self, ctx: MethodContext, options: Any) -> MethodOutput:
        # An option the host leaves unset (Opti-CAM's tol None) is the graph input's default.
        given = {name: getattr(options, name) for name in self.honours}
        out = self.graphs.run(ctx.images, self.method, ctx.targets, **given)
        trace = None if out.loss is None else np.ascontiguousarray(out.loss.T)
        return MethodOutput(maps=out.map, trace=trace, steps=out.steps)
