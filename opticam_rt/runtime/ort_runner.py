"""ONNX Runtime runners: ``ort-cpu``, ``ort-cuda`` and ``ort-trt`` (execution providers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from opticam_rt.bundle import GRAPH_SIGNATURES, Bundle
from opticam_rt.errors import BackendUnavailableError, BundleError
from opticam_rt.runtime.runner import Capabilities, Runner

#: Backend name -> ONNX Runtime execution providers, first preferred.
ORT_PROVIDERS: dict[str, list[str]] = {
    "ort-cpu": ["CPUExecutionProvider"],
    "ort-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "ort-trt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError("onnxruntime is not installed: pip install onnxruntime") from exc
    return onnxruntime


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An engine's (often multi-line) exception as one line: its type and the start of its message."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:limit]}"


def ort_available(backend: str) -> bool:
    """Whether this onnxruntime build has the backend's first provider."""
    try:
        return ORT_PROVIDERS[backend][0] in import_onnxruntime().get_available_providers()
    except BackendUnavailableError:
        return False


class OrtRunner(Runner):
    """ONNX Runtime with the providers of one backend; sessions are created per graph on first use
    (under ``self.lock``, so threads racing on a first use create one). ``InferenceSession.run``
    is documented thread-safe, so calls from several threads run concurrently.

    Args:
        threads: intra-op threads (None: ONNX Runtime's default, all cores).
    """

    def __init__(self, bundle: Bundle, backend: str = "ort-cpu", threads: int | None = None) -> None:
        super().__init__(bundle)
        if backend not in ORT_PROVIDERS:
            raise BackendUnavailableError(f"{backend!r} is not an ONNX Runtime backend ({', '.join(ORT_PROVIDERS)})")
        self.name = backend
        self.threads = threads
        self.providers = ORT_PROVIDERS[backend]
        self.capabilities = Capabilities(device_buffers=backend != "ort-cpu")
        self.sessions: dict[str, Any] = {}

    def activate_impl(self) -> None:
        ort = import_onnxruntime()
        if not ort_available(self.name):
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
        session = self.sessions.get(key)
        if session is not None:
            return session
        with self.lock:
            if key not in self.sessions:
                self.sessions[key] = self._create_session(graph, cuda_stream)
        return self.sessions[key]

    def _create_session(self, graph: str, cuda_stream: int | None) -> Any:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        providers: list[Any] = list(self.providers)
        if cuda_stream is not None and "CUDAExecutionProvider" in providers:
            at = providers.index("CUDAExecutionProvider")
            providers[at] = ("CUDAExecutionProvider", {"user_compute_stream": str(cuda_stream)})
        path = self.bundle.graph_path(graph)
        try:
            return ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types, not importable here
            raise BundleError(f"{path}: ONNX Runtime cannot load this graph ({one_line(exc)})") from exc

    def infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = GRAPH_SIGNATURES[graph][1]
        values = self.session(graph).run(list(names), feeds)
        return dict(zip(names, values))

    def deactivate_impl(self) -> None:
        self.sessions.clear()
