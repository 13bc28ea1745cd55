"""The method contract: what a saliency method sees (MethodContext) and returns (MethodOutput).

A method sees its runner only through ``GraphRunner`` (run a bundle graph by name), so the
methods room needs nothing from the runtime that drives it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import numpy as np

from opticam_rt.methods.options import MethodOptions, NoOptions


class GraphRunner(Protocol):
    """What a method needs of a backend: run one bundle graph (``runtime.runner.Runner`` is one)."""

    name: str

    def infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass
class MethodContext:
    """What every method sees. images (N, 3, H, W) float32 in [0, 1]; targets (N,) int64;
    logits (N, C) and features (N, K, h, w) of the unmasked images, from ``runner``."""

    runner: GraphRunner
    images: np.ndarray
    targets: np.ndarray
    logits: np.ndarray
    features: np.ndarray
    progress: Callable[[int], None] | None = None
    #: graph name -> a binding that runs it on CuPy device arrays (``runtime.device.DeviceBinding``),
    #: or None where the runner keeps nothing on a device; set by the Explainer.
    bind_on_device: Callable[[str], Any] | None = None
    _grad_features: np.ndarray | None = field(default=None, repr=False)

    def onehot(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(N, C) one-hot of the targets (optionally of a subset of rows)."""
        targets = self.targets if rows is None else self.targets[rows]
        out = np.zeros((len(targets), self.logits.shape[1]), dtype=np.float32)
        out[np.arange(len(targets)), targets] = 1.0
        return out

    def target_gradients(self) -> np.ndarray:
        """d logit_target / d A, (N, K, h, w), from the grad_features graph (computed once)."""
        if self._grad_features is None:
            out = self.runner.infer("grad_features", {"image": self.images, "cotangent": self.onehot()})
            self._grad_features = out["grad_features"]
        return self._grad_features


@dataclass
class MethodOutput:
    """maps (N, H, W) float32 in [0, 1]. Optimising methods also give u (N, K), the final
    channel logits; trace (N, T), the loss per step (NaN once an image stopped; T the steps
    run); steps (N,), the steps each image used."""

    maps: np.ndarray
    u: np.ndarray | None = None
    trace: np.ndarray | None = None
    steps: np.ndarray | None = None


class MethodImplementation(ABC):
    """Something that computes one method on a MethodContext.

    ``honours`` names the options this implementation acts on; None means all declared ones.
    The Explainer refuses a non-default value of an option an implementation would ignore.
    """

    honours: frozenset[str] | None = None

    @abstractmethod
    def run(self, ctx: MethodContext, options: Any) -> MethodOutput: ...


class CamMethod(MethodImplementation):
    """A saliency method over the bundle graphs of any runner; one small class per method.

    Subclasses set ``name`` (the registry key), ``Options`` (a MethodOptions dataclass, declared
    once and read by the API and the CLI) and override ``saliency`` or ``run``.
    """

    name: ClassVar[str] = "cam"
    Options: ClassVar[type[MethodOptions]] = NoOptions
    #: Options that make a run cheap but still touch every graph the method uses (bench warm-up).
    cheap_options: ClassVar[dict[str, Any]] = {}

    def run(self, ctx: MethodContext, options: Any) -> MethodOutput:
        return MethodOutput(maps=self.saliency(ctx, options))

    def saliency(self, ctx: MethodContext, options: Any) -> np.ndarray:
        """-> maps (N, H, W) float32 in [0, 1]."""
        raise NotImplementedError(f"{type(self).__name__} overrides neither saliency nor run")
