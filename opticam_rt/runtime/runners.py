"""The backend registry: name -> runner class, availability, and what ``auto`` picks per method."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from opticam_rt.bundle import Bundle
from opticam_rt.errors import BackendUnavailableError
from opticam_rt.runtime.runner import Runner


@dataclass(frozen=True)
class BackendEntry:
    """One backend: its runner class and availability check (``module:attribute``, imported only
    when used, so a CPU-only install never imports CUDA or OpenVINO), the keyword arguments that
    select it, whether it runs on a GPU (``auto`` prefers those), and ``methods``: where the
    backend computes whole methods by itself (``module:attribute`` of a function
    ``(runner, method) -> MethodImplementation``; the PyTorch reference), None when it only runs
    the bundle graphs and each method's runtime class drives them. ``options``: the caller's
    runner options this backend takes (the others are not passed to it)."""

    runner: str
    available: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    gpu: bool = False
    methods: str | None = None
    options: tuple[str, ...] = ()


RUNNERS: dict[str, BackendEntry] = {
    "ort-cpu": BackendEntry("opticam_rt.runtime.ort_runner:OrtRunner", "opticam_rt.runtime.ort_runner:ort_available", {"backend": "ort-cpu"}),
    "ort-cuda": BackendEntry("opticam_rt.runtime.ort_runner:OrtRunner", "opticam_rt.runtime.ort_runner:ort_available", {"backend": "ort-cuda"}, gpu=True),
    "ort-trt": BackendEntry("opticam_rt.runtime.ort_runner:OrtRunner", "opticam_rt.runtime.ort_runner:ort_available", {"backend": "ort-trt"}, gpu=True),
    "ov-cpu": BackendEntry("opticam_rt.runtime.openvino_runner:OvRunner", "opticam_rt.runtime.openvino_runner:openvino_available"),
    "torch": BackendEntry("opticam_rt.runtime.torch_runner:TorchRunner", "opticam_rt.runtime.torch_runner:torch_available", methods="opticam_rt.runtime.torch_runner:reference_method",
                          options=("model", "trust_code")),
}
BACKENDS = ("auto", *RUNNERS)

#: ``auto`` on a GPU machine. CUDA before TensorRT: the TensorRT provider lists itself whenever
#: onnxruntime-gpu is installed, even without libnvinfer, and builds engines for minutes.
GPU_ORDER = ("ort-cuda", "ort-trt")
#: ``auto`` on a CPU machine for plain predictions; a method's own order is its registration's
#: ``cpu_order`` (measured side by side in docs/perf-notes.md).
CPU_ORDER = ("ort-cpu", "ov-cpu")


def cpu_order(method: str | None) -> tuple[str, ...]:
    """The CPU backends ``auto`` tries for ``method``, fastest first."""
    if method is None:
        return CPU_ORDER
    from opticam_rt.methods import method_record

    return method_record(method).cpu_order


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def is_available(backend: str) -> bool:
    """Whether the backend's package (and device) is present; imports it."""
    return bool(_load(RUNNERS[backend].available)(backend))


def available_backends() -> list[str]:
    """Backends usable on this machine: GPU ones first, the PyTorch reference last."""
    found = [b for b in RUNNERS if is_available(b)]
    return sorted(found, key=lambda b: (not RUNNERS[b].gpu, b == "torch"))


def resolve_backend(backend: str, method: str | None = None) -> str:
    """``auto`` -> a GPU backend when one is usable, else the fastest CPU backend for ``method``
    (see ``cpu_order``); any other name is checked against the registry."""
    if backend not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    for candidate in (*GPU_ORDER, *cpu_order(method)):
        if is_available(candidate):
            return candidate
    raise BackendUnavailableError("no runtime backend is available: pip install onnxruntime (or openvino)")


def create_runner(backend: str, bundle: Bundle, threads: int | None = None, **options: Any) -> Runner:
    """An (inactive) runner of a registered backend over ``bundle``; ``options`` (e.g. the PyTorch
    backend's ``model`` and ``trust_code``) reach only the backends that declare them."""
    if backend not in RUNNERS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of {', '.join(RUNNERS)}")
    entry = RUNNERS[backend]
    taken = {k: v for k, v in options.items() if k in entry.options}
    return _load(entry.runner)(bundle, threads=threads, **entry.kwargs, **taken)


def native_method(runner: Runner, method: str) -> Any:
    """The backend's own implementation of ``method`` (a ``MethodImplementation``; the PyTorch
    reference under ``torch``), or None when the method's runtime class runs over its graphs."""
    entry = RUNNERS.get(runner.name)
    if entry is None or entry.methods is None:
        return None
    return _load(entry.methods)(runner, method)
