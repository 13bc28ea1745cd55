"""The Explainer: load a bundle once, explain batches of images with any registered method."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from opticam_rt.bundle import Bundle, load_bundle
from opticam_rt.errors import InputError
from opticam_rt.runtime.checks import check_finite_maps, check_images, check_targets
from opticam_rt.runtime.explanation import Explanation
from opticam_rt.methods import REGISTRY, method_record
from opticam_rt.methods.cam_family import softmax
from opticam_rt.methods.contract import CamMethod, MethodContext, MethodImplementation
from opticam_rt.runtime.runner import Runner
from opticam_rt.runtime.runners import create_runner, native_method, resolve_backend

#: Registered method names, in registry order (also the CLI's choices).
METHOD_NAMES = tuple(REGISTRY)
#: How a method is computed: ``host`` runs the method's class over the bundle graphs (any
#: backend; early-stopped images leave the batch; the split/GPU pipeline); ``graph`` runs the
#: method's self-contained explainer graph in one ONNX Runtime call, as an embedding service would.
ENGINES = ("host", "graph")


def method_class(method: str) -> type[CamMethod]:
    """The registered class of ``method``; InputError naming the choices otherwise."""
    return method_record(method).host  # type: ignore[return-value]


def device_binder(runner: Runner) -> Callable[[str], Any] | None:
    """graph name -> a CuPy IOBinding of it on ``runner``, where the runner can keep buffers on a
    GPU that CuPy sees (the split Opti-CAM pipeline's device path); None elsewhere."""
    if not runner.capabilities.device_buffers:
        return None
    from opticam_rt.runtime.device import DeviceBinding, cupy_or_none

    if cupy_or_none() is None:
        return None
    return lambda graph: DeviceBinding(runner, graph)


class Explainer:
    """Saliency maps from an exported bundle, on any registered backend.

    Args:
        bundle: a bundle directory or a loaded Bundle.
        backend: a registered backend name (``ort-cpu``, ``ov-cpu``, ``ort-cuda``, ``ort-trt``,
            ``torch``), ``auto``, or a Runner built by the caller (e.g. ``OvRunner(bundle,
            precision="bf16")``). ``auto`` takes a GPU backend when one is usable, otherwise the
            CPU backend measured fastest for each method (each method's ``cpu_order``, ``opticam_rt.methods``); each
            Explanation names the backend that computed it.
        threads: intra-op threads of the runners this Explainer creates (default: all cores).
        engine: ``host`` (default) or ``graph`` (see ENGINES); ``graph`` needs a bundle exported
            with explainer graphs and an ONNX Runtime backend (``auto`` then takes ONNX Runtime's).
        model: for the ``torch`` backend, the PyTorch model to rebuild (built-in name,
            ``pkg.module:factory`` or ``file.py:factory``); None: the manifest's own, imported
            only when built in or when the bundle's code is trusted.
        trust_code: let the ``torch`` backend import the model code the bundle's manifest names
            (as OPTICAM_RT_TRUST_BUNDLE_CODE=1 does); off by default, since a bundle is data and
            whoever wrote its manifest chose that code (docs/reliability.md, "Trust").

    One Explainer may be shared by threads (a server's workers): ``explain`` and ``predict``
    calls from several threads give each the result it would get alone (tests/runtime/test_rt_threads.py).
    """

    def __init__(
        self, bundle: str | Path | Bundle, backend: str | Runner = "auto", threads: int | None = None, engine: str = "host",
        model: str | None = None, trust_code: bool = False,
    ) -> None:
        if engine not in ENGINES:
            raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.threads = threads
        self.engine = engine
        self.runner_options = {"model": model, "trust_code": trust_code}
        self._graphs: Any = None
        self._runners: dict[str, Runner] = {}
        self._lock = threading.Lock()  # guards the lazily created runners and explainer graphs
        if isinstance(backend, Runner):
            self.backend = backend.name
            self._runners[backend.name] = backend.activate()
        else:
            self.backend = backend
            self.runner_for(None)  # fail here, not on first use, when the backend cannot run

    def runner_for(self, method: str | None) -> Runner:
        """The active runner that computes ``method`` (None: plain predictions)."""
        name = self.backend if self.backend in self._runners else resolve_backend(self.backend, method)
        runner = self._runners.get(name)
        if runner is None:
            with self._lock:
                if name not in self._runners:
                    self._runners[name] = create_runner(name, self.bundle, self.threads, **self.runner_options).activate()
                runner = self._runners[name]
        return runner

    @property
    def runner(self) -> Runner:
        """The runner of plain predictions."""
        return self.runner_for(None)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.bundle.manifest.input_size)  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            for runner in self._runners.values():
                runner.deactivate()
            self._runners.clear()

    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
    def check_images(self, images: np.ndarray) -> np.ndarray:
        """Validate (N, 3, H, W) float pixels in [0, 1] at the bundle's input size."""
        return check_images(images, self.input_size)

    def check_targets(self, targets: Sequence[int] | np.ndarray | int | None, n: int, logits: np.ndarray) -> np.ndarray:
        """(N,) class indices; None: each image's top-1 class from ``logits`` (N, C)."""
        if targets is None:
            return logits.argmax(axis=1)
        return check_targets(targets, n, self.bundle.manifest.num_classes)

    def predict(self, images: np.ndarray, runner: Runner | None = None) -> tuple[np.ndarray, np.ndarray]:
        """images (N, 3, H, W) -> logits (N, C), features (N, K, h, w)."""
        out = (runner or self.runner).infer("forward", {"image": self.check_images(images)})
        return out["logits"], out["features"]

    def predict_proba(self, images: np.ndarray, runner: Runner | None = None) -> np.ndarray:
        """images (N, 3, H, W) -> softmax probabilities (N, C)."""
        return softmax(self.predict(images, runner)[0], axis=1)

    def explain(
        self,
        images: np.ndarray,
        method: str = "opti-cam",
        targets: Sequence[int] | np.ndarray | int | None = None,
        progress: Callable[[int], None] | None = None,
        **options: Any,
    ) -> Explanation:
        """Explain a batch. images (N, 3, H, W) float32 in [0, 1]; targets None means top-1.

        ``options`` are the method's declared options (``REGISTRY[method].Options``; Opti-CAM:
        iterations, lr, loss, tol, patience, pipeline); an unknown name or a bad value raises
        InputError naming it, as does an option the backend would not honour.
        """
        cls = method_class(method)
        parsed = cls.Options.parse(options, method)
        runner = self.runner_for(method if self.engine == "host" else None)
        implementation = self._implementation(method, runner) or cls()
        self._check_honoured(method, runner, implementation.honours, parsed)
        start = time.perf_counter()
        images = self.check_images(images)
        forward = runner.infer("forward", {"image": images})
        logits, features = forward["logits"], forward["features"]
        targets_arr = self.check_targets(targets, len(images), logits)
        ctx = MethodContext(runner, images, targets_arr, logits, features, progress, device_binder(runner))
        out = implementation.run(ctx, parsed)
        check_finite_maps(out.maps, method, parsed.as_dict(), self.bundle.manifest.verification)
        rows = np.arange(len(images))
        scores = softmax(logits, axis=1)[rows, targets_arr]
        masked = self.predict_proba(images * out.maps[:, None], runner)[rows, targets_arr]
        return Explanation(
            method=method,
            backend=runner.name,
            maps=np.asarray(out.maps, dtype=np.float32),
            targets=targets_arr,
            scores=scores,
            masked_scores=masked,
            class_names=[self.bundle.class_name(int(t)) for t in targets_arr],
            seconds=time.perf_counter() - start,
            options=parsed.as_dict(),
            engine=self.engine,
            trace=out.trace,
            iterations=out.steps,
            u=out.u,
        )

    def _implementation(self, method: str, runner: Runner) -> MethodImplementation | None:
        """The backend's own implementation (the PyTorch reference), the explainer graph under
        ``engine="graph"``, or None for the method's runtime class."""
        if self.engine == "host":
            return native_method(runner, method)
        from opticam_rt.runtime.embedded import GraphExplainer, GraphMethod
        from opticam_rt.runtime.ort_runner import OrtRunner

        if not isinstance(runner, OrtRunner):
            raise InputError(f"engine 'graph' runs under ONNX Runtime; backend {runner.name!r} is not an ort-* backend")
        with self._lock:
            if self._graphs is None:
                self._graphs = GraphExplainer(self.bundle, providers=runner.providers, threads=self.threads)
        return GraphMethod(self._graphs, method)

    @staticmethod
    def _check_honoured(method: str, runner: Runner, honours: frozenset[str] | None, options: Any) -> None:
        if honours is None:
            return
        defaults = type(options)()
        ignored = [n for n in options.names() if n not in honours and getattr(options, n) != getattr(defaults, n)]
        if ignored:
            raise InputError(
                f"backend {runner.name!r} cannot honour {method} option(s) {', '.join(ignored)} "
                f"(it acts on: {', '.join(sorted(honours)) or 'none'}); drop them or choose another backend"
            )
