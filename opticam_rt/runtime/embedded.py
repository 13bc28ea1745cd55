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
from opticam_rt.runtime.explanation import Explanation
from opticam_rt.runtime.method import MethodContext, MethodImplementation, MethodOutput


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
        *,
        iterations: int | None = None,
        lr: float | None = None,
        tol: float | None = None,
        patience: int | None = None,
        chunk: int | None = None,
    ) -> GraphOutputs:
        """Explain images (N, 3, H, W) float32 in [0, 1]; targets None (or -1) means top-1.

        Options left None keep the graph's defaults (``manifest.explainers[method]["defaults"]``);
        an option the method's graph does not take is an error.
        """
        feeds = {"image": self.check_images(images)}
        feeds["target"] = self.check_targets(targets, len(feeds["image"]))
        given = {"iterations": iterations, "lr": lr, "tol": tol, "patience": patience, "chunk": chunk}
        feeds.update(self.check_options(method, {k: v for k, v in given.items() if v is not None}))
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
        images = np.asarray(images)
        h, w = self.bundle.manifest.input_size
        if images.ndim != 4 or images.shape[1:] != (3, h, w):
            raise InputError(f"images must have shape (N, 3, {h}, {w}), got {images.shape}")
        if len(images) == 0:
            raise InputError("images is an empty batch (N = 0)")
        if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1.0 + 1e-6:
            raise InputError(
                f"image pixels must be in [0, 1] (got {images.min():.3g}..{images.max():.3g}); divide 0..255 data by 255"
            )
        return np.ascontiguousarray(images, dtype=np.float32)

    def check_targets(self, targets: Sequence[int] | np.ndarray | int | None, n: int) -> np.ndarray:
        if targets is None:
            return np.full(n, -1, dtype=np.int64)
        arr = np.full(n, targets) if np.isscalar(targets) else np.asarray(targets)
        if arr.shape != (n,):
            raise InputError(f"targets must be one class index per image ({n}), got shape {arr.shape}")
        c = self.bundle.manifest.num_classes
        for i, t in enumerate(arr):
            if not float(t).is_integer() or not -1 <= int(t) < c:
                raise InputError(
                    f"target class {t} of image {i} is out of range: the model has classes 0..{c - 1} (-1 = top-1)"
                )
        return arr.astype(np.int64)

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
        given = {name: getattr(options, name) for name in self.honours}
        if "tol" in given and given["tol"] is None:
            given["tol"] = 0.0  # the graph's "run every step"
        out = self.graphs.run(ctx.images, self.method, ctx.targets, **given)
        trace = None if out.loss is None else np.ascontiguousarray(out.loss.T)
        return MethodOutput(maps=out.map, trace=trace, steps=out.steps)
