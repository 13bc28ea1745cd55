"""OpenVINO on the CPU (``ov-cpu``), reading the bundle's ONNX graphs as they are."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opticam_rt.bundle import GRAPH_SIGNATURES, Bundle
from opticam_rt.errors import BackendUnavailableError, BundleError, InputError
from opticam_rt.runtime.ort_runner import one_line
from opticam_rt.runtime.runner import Capabilities, Runner

#: Inference precisions a caller may ask for. OpenVINO's CPU plugin defaults to bf16 on CPUs with
#: AVX512-BF16 or AMX, which moved EfficientNet-Lite0's opticam_step outputs by 1.2 (relative);
#: f32 agrees with ONNX Runtime to 1.3e-3 on grad_u, so f32 is the default and bf16 is opt-in.
PRECISIONS = ("f32", "bf16")
#: Compiled (graph, batch) models kept; a static batch ran the Opti-CAM step 1.8x faster than a
#: dynamic one (20 vs 36 ms, EfficientNet-Lite0, batch 1), and compiling takes about a second.
MAX_COMPILED = 12


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(
            "backend 'ov-cpu' needs OpenVINO: pip install 'opticam-rt[openvino]' (or pip install openvino)"
        ) from exc
    return openvino


def usable_cores() -> int:
    """The cores this process may run on (its CPU mask; all cores where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def openvino_available(backend: str = "ov-cpu") -> bool:
    try:
        import_openvino()
    except BackendUnavailableError:
        return False
    return True


@dataclass
class CompiledGraph:
    """One graph compiled for one batch size, with its single infer request and the lock that
    lets one thread at a time use it.

    An infer request runs one inference at a time (a second ``infer`` raises "Infer Request is
    busy") and owns its output buffers, which the next call overwrites: 4 threads sharing one
    Explainer failed 24 of 32 Grad-CAM calls, and Opti-CAM returned other threads' maps without
    an error. Under the LATENCY hint one inference already uses every core, so serialising
    calls costs little (see docs/decisions.md: a lock measured faster than a pool of requests).
    """

    request: Any
    lock: threading.Lock = field(default_factory=threading.Lock)

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            result = self.request.infer(feeds)
            # The request owns its output buffers and reuses them on the next call: copy out.
            return {name: np.array(result[name]) for name in GRAPH_SIGNATURES[graph][1]}


class OvRunner(Runner):
    """OpenVINO's CPU plugin. Each graph is read once and compiled per batch size on first use
    (static shapes), with the LATENCY hint: one stream using every core, as ONNX Runtime does.

    Thread-safe: the cache of compiled graphs is guarded by ``self.lock``, each (graph, batch)
    compiles once even when threads race on its first use (a lock per key, so other graphs keep
    running meanwhile), and each compiled graph's infer request is used by one thread at a time.

    Args:
        threads: inference threads (None: all cores).
        precision: ``f32`` (default) or ``bf16`` (faster where the CPU has bf16 units; maps move).
    """

    name = "ov-cpu"

    def __init__(self, bundle: Bundle, threads: int | None = None, precision: str = "f32") -> None:
        super().__init__(bundle)
        if precision not in PRECISIONS:
            raise InputError(f"OpenVINO precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.threads = threads
        self.precision = precision
        self.capabilities = Capabilities(static_shapes=True)
        self.core: Any = None
        self.models: dict[str, Any] = {}
        self.compiled: OrderedDict[tuple[str, int], CompiledGraph] = OrderedDict()
        self._compiling: dict[tuple[str, int], threading.Lock] = {}

    def activate_impl(self) -> None:
        ov = import_openvino()
        self.core = ov.Core()
        if "CPU" not in self.core.available_devices:
            raise BackendUnavailableError(f"OpenVINO sees no CPU device (devices: {self.core.available_devices})")

    def config(self) -> dict[str, Any]:
        """The compile properties: f32 (or bf16), the LATENCY hint, and with ``threads`` fewer than
        the cores this process may run on, that many threads and no CPU pinning.

        OpenVINO pins its inference threads to the lowest-numbered cores of the process's CPU
        mask, without knowing about other processes: two Ray actors of one thread each on a
        2-core node both ran on core 0 while core 1 sat idle (Opti-CAM 1.6x slower than with
        pinning off). A process given every core keeps the pinning (8% faster with 2 threads).
        """
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": self.precision, "PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
            if self.threads < usable_cores():
                config["ENABLE_CPU_PINNING"] = False
        return config

    def request(self, graph: str, feeds: dict[str, np.ndarray]) -> CompiledGraph:
        """``graph`` compiled for the feeds' batch size (on first use), with its infer request."""
        key = (graph, len(next(iter(feeds.values()))))
        with self.lock:
            if key in self.compiled:
                self.compiled.move_to_end(key)
                return self.compiled[key]
            compiling = self._compiling.setdefault(key, threading.Lock())
        with compiling:  # one compile per key; threads that waited find it cached
            with self.lock:
                if key in self.compiled:
                    return self.compiled[key]
            entry = CompiledGraph(self._compile(graph, feeds).create_infer_request())
            with self.lock:
                self.compiled[key] = entry
                self._compiling.pop(key, None)
                if len(self.compiled) > MAX_COMPILED:
                    self.compiled.popitem(last=False)  # a thread still holding it finishes its call
            return entry

    def _compile(self, graph: str, feeds: dict[str, np.ndarray]) -> Any:
        path = self.bundle.graph_path(graph)
        try:
            with self.lock:
                if graph not in self.models:
                    self.models[graph] = self.core.read_model(str(path))
                model = self.models[graph].clone()
            model.reshape({name: list(value.shape) for name, value in feeds.items()})
            return self.core.compile_model(model, "CPU", self.config())
        except RuntimeError as exc:  # OpenVINO reports read, reshape and compile failures as RuntimeError
            batch = len(next(iter(feeds.values())))
            raise BundleError(f"{path}: OpenVINO cannot compile this graph for batch {batch} ({one_line(exc)})") from exc

    def infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.request(graph, feeds).infer(graph, feeds)

    def deactivate_impl(self) -> None:
        self.compiled.clear()
        self.models.clear()
        self.core = None
