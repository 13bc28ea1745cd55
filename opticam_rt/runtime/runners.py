"""Runners: one interface over ONNX Runtime execution providers, each owning its sessions."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from opticam_rt.bundle import GRAPH_SIGNATURES, Bundle
from opticam_rt.errors import BackendUnavailableError, InputError

#: Backend name -> ONNX Runtime execution providers, first preferred.
ORT_PROVIDERS: dict[str, list[str]] = {
    "ort-cpu": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
BACKENDS = ("auto", *ORT_PROVIDERS, "torch")


class Runner(ABC):
    """Lifecycle: ``activate()`` -> ``infer()``... -> ``deactivate()``; also a context manager.

    Subclasses write the ``*_impl`` methods; the public ones validate and time.
    """

    name = "runner"

    def __init__(self) -> None:
        self.is_active = False
        self.last_inference_time: float | None = None

    def activate(self) -> "Runner":
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one bundle graph. Feeds and outputs are named as in ``GRAPH_SIGNATURES``."""
        if graph not in GRAPH_SIGNATURES:
            raise InputError(f"unknown graph {graph!r}; graphs are {sorted(GRAPH_SIGNATURES)}")
        expected = GRAPH_SIGNATURES[graph][0]
        if set(feeds) != set(expected):
            raise InputError(f"graph {graph!r} takes inputs {expected}, got {tuple(feeds)}")
        batch = {len(v) for v in feeds.values()}
        if len(batch) != 1:
            raise InputError(f"graph {graph!r}: inputs disagree on the batch size: { {k: v.shape for k, v in feeds.items()} }")
        self.activate()
        start = time.perf_counter()
        out = self.infer_impl(graph, feeds)
        self.last_inference_time = time.perf_counter() - start
        return out

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:
        return None


class OrtRunner(Runner):
    """ONNX Runtime with the providers of one backend; sessions are created per graph on first use.

    Args:
        threads: intra-op threads (None: ONNX Runtime's default, all cores).
    """

    def __init__(self, bundle: Bundle, backend: str = "ort-cpu", threads: int | None = None) -> None:
        super().__init__()
        if backend not in ORT_PROVIDERS:
            raise BackendUnavailableError(f"{backend!r} is not an ONNX Runtime backend ({', '.join(ORT_PROVIDERS)})")
        self.bundle = bundle
        self.name = backend
        self.threads = threads
        self.providers = ORT_PROVIDERS[backend]
        self.sessions: dict[str, Any] = {}

    def activate_impl(self) -> None:
        ort = _import_onnxruntime()
        missing = self.providers[0] not in ort.get_available_providers()
        if missing:
            raise BackendUnavailableError(
                f"backend {self.name!r} needs {self.providers[0]}, which this onnxruntime does not have "
                f"(available: {', '.join(ort.get_available_providers())}); install it with "
                "`pip install 'opticam-rt[gpu]'` (onnxruntime-gpu, CUDA 12/13)"
                + (" and TensorRT 10 (libnvinfer.so.10)" if self.name == "ort-trt" else "")
            )

    def session(self, graph: str, cuda_stream: int | None = None) -> Any:
        """The session of one graph, created on first use.

        ``cuda_stream`` (a CUDA stream pointer) makes the CUDA provider run on that stream, so
        device-resident callers (CuPy kernels) share it; such sessions are cached separately.
        """
        key = graph if cuda_stream is None else f"{graph}@stream{cuda_stream}"
        if key not in self.sessions:
            ort = _import_onnxruntime()
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.log_severity_level = 3
            if self.threads:
                options.intra_op_num_threads = self.threads
            providers: list[Any] = list(self.providers)
            if cuda_stream is not None and "CUDAExecutionProvider" in providers:
                at = providers.index("CUDAExecutionProvider")
                providers[at] = ("CUDAExecutionProvider", {"user_compute_stream": str(cuda_stream)})
            self.sessions[key] = ort.InferenceSession(str(self.bundle.graph_path(graph)), options, providers=providers)
        return self.sessions[key]

    def infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.session(graph)
        names = GRAPH_SIGNATURES[graph][1]
        values = session.run(list(names), {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})
        return dict(zip(names, values))

    def deactivate_impl(self) -> None:
        self.sessions.clear()


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError("onnxruntime is not installed: pip install onnxruntime") from exc
    return onnxruntime


def available_backends() -> list[str]:
    """Backends usable on this machine, best first."""
    found = []
    try:
        providers = _import_onnxruntime().get_available_providers()
    except BackendUnavailableError:
        providers = []
    for backend, wanted in ORT_PROVIDERS.items():
        if wanted[0] in providers:
            found.append(backend)
    found.sort(key=lambda b: ["ort-cuda", "ort-trt", "ort-cpu"].index(b))
    try:
        import torch  # noqa: F401

        found.append("torch")
    except ImportError:
        pass
    return found


def resolve_backend(backend: str) -> str:
    """``auto`` -> the best available ONNX Runtime backend; others are checked by name.

    ``auto`` prefers CUDA over TensorRT: the TensorRT provider lists itself whenever
    onnxruntime-gpu is installed, even without libnvinfer, and builds engines for minutes.
    """
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    for candidate in available_backends():
        if candidate.startswith("ort-"):
            return candidate
    raise BackendUnavailableError("no ONNX Runtime backend is available: pip install onnxruntime")
