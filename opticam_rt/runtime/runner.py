"""The runner contract every backend implements: activate -> infer... -> deactivate."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from opticam_rt.bundle import GRAPH_SIGNATURES, Bundle, graph_input_shapes
from opticam_rt.errors import InputError


@dataclass(frozen=True)
class Capabilities:
    """What a runner can do beyond running the bundle graphs on host arrays.

    device_buffers: it can keep inputs and outputs on a CUDA device (IOBinding on CuPy arrays),
        so the split Opti-CAM pipeline can run without host copies per step.
    static_shapes: see below.
    """

    device_buffers: bool = False
    #: It compiles a model per batch size (OpenVINO's static shapes, about a second each): a
    #: caller that forms batches dynamically should keep to a few sizes (the server pads batches
    #: to powers of two) so its compiled models are not evicted and compiled again.
    static_shapes: bool = False


class Runner(ABC):
    """One backend over one bundle. ``activate()`` acquires its resources (sessions, compiled
    models, a loaded PyTorch model), ``infer()`` runs a bundle graph, ``deactivate()`` frees them;
    also a context manager. Subclasses write the ``*_impl`` methods; the public ones validate.

    Every runner computes the graphs of ``GRAPH_SIGNATURES`` with the same names and shapes, so
    methods, verification and benchmarks run unchanged on any of them.

    Runners may be shared by threads: ``infer()`` from several threads at once gives each the
    result it would get alone. Activation is serialised by ``self.lock``; each subclass guards
    its own lazily built caches (sessions, compiled models) and whatever its engine cannot run
    concurrently (one OpenVINO infer request, PyTorch's forward hooks).
    """

    #: Registry name (``ort-cpu``, ``ov-cpu``, ``torch``, ...); set per instance where one class
    #: serves several backends.
    name = "runner"

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self.is_active = False
        self.capabilities = Capabilities()
        self._shapes = graph_input_shapes(bundle.manifest)
        #: Serialises activate/deactivate (re-entrant, so subclasses may also take it).
        self.lock = threading.RLock()

    def activate(self) -> "Runner":
        if not self.is_active:
            with self.lock:
                if not self.is_active:
                    self.activate_impl()
                    self.is_active = True
        return self

    def deactivate(self) -> None:
        with self.lock:
            if self.is_active:
                self.deactivate_impl()
                self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one bundle graph on host arrays; feeds and outputs are named as in ``GRAPH_SIGNATURES``.

        Raises:
            InputError: an unknown graph, missing or extra inputs, or a shape that does not fit
                the bundle (the message names the input and both shapes).
        """
        self.check_feeds(graph, feeds)
        self.activate()
        return self.infer_impl(graph, {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()})

    def check_feeds(self, graph: str, feeds: dict[str, Any]) -> None:
        if graph not in GRAPH_SIGNATURES:
            raise InputError(f"unknown graph {graph!r}; graphs are {sorted(GRAPH_SIGNATURES)}")
        expected = self._shapes[graph]
        if set(feeds) != set(expected):
            raise InputError(f"graph {graph!r} takes inputs {tuple(expected)}, got {tuple(feeds)}")
        batch = {len(v) for v in feeds.values()}
        if len(batch) != 1:
            raise InputError(f"graph {graph!r}: inputs disagree on the batch size: { {k: v.shape for k, v in feeds.items()} }")
        for name, shape in expected.items():
            got = tuple(feeds[name].shape)
            if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
                want = "(" + ", ".join("N" if e is None else str(e) for e in shape) + ")"
                raise InputError(f"graph {graph!r}: input {name!r} must have shape {want}, got {got}")

    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def deactivate_impl(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.bundle.path})"
