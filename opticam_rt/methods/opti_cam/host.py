"""Opti-CAM's host implementation (Zhang et al. 2023, arXiv 2301.07002): per-image channel weights by Adam."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opticam_rt.constants import MAX_ITERATIONS
from opticam_rt.kernels import opticam_adjoint, opticam_forward
from opticam_rt.method_defaults import ADAM, OPTI_CAM
from opticam_rt.methods.contract import CamMethod, MethodContext, MethodOutput
from opticam_rt.methods.options import MethodOptions, option

#: ``MAX_ITERATIONS``, the upper bound of ``iterations`` (opticam_rt.constants, shared with the
#: explainer graph). The paper uses 100; 10,000 steps are about 4 minutes per image on two cores,
#: far past convergence, while a typo such as 1e9 would otherwise run for years.


@dataclass(frozen=True)
class OptiCAMOptions(MethodOptions):
    iterations: int = option(OPTI_CAM["iterations"], "Adam steps per image (the paper: 100).", low=1, high=MAX_ITERATIONS)
    lr: float = option(OPTI_CAM["lr"], "Adam learning rate (the paper: 0.1).", positive=True, high=100.0)
    loss: str = option("mask", "Objective: 'mask' maximises the target logit of x * S; 'diff' minimises "
                       "|f(x) - f(x * S)| for the target.", choices=("mask", "diff"))
    tol: float | None = option(None, "Early stopping: an image stops once its loss changed by at most tol "
                               "(relative) for `patience` steps in a row; unset runs every step.", low=0.0)
    patience: int = option(OPTI_CAM["patience"], "Consecutive quiet steps before an image stops (with tol).", low=1, high=MAX_ITERATIONS)
    pipeline: str = option("fused", "'fused' runs the opticam_step graph (mask path inside ONNX); 'split' runs "
                           "the mask kernel, the grad_image graph and the kernel adjoint.", choices=("fused", "split"))


@dataclass
class Adam:
    """Adam (Kingma & Ba 2015) on u (N, K) with a step count per row, so rows can stop early.

    Same update and defaults as ``torch.optim.Adam`` (betas 0.9/0.999, eps 1e-8, bias correction).
    The bias corrections use running products beta^t in float32 rather than a power, so the
    explainer graph's Loop (``graph.py`` here) can repeat them bit for bit: ONNX
    Runtime's float Pow and NumPy's differ in the last bit for some t.
    """

    lr: float
    beta1: float = ADAM["beta1"]
    beta2: float = ADAM["beta2"]
    eps: float = ADAM["eps"]

    def init(self, shape: tuple[int, int]) -> None:
        self.m = np.zeros(shape, dtype=np.float32)
        self.v = np.zeros(shape, dtype=np.float32)
        self.t = np.zeros(shape[0], dtype=np.int64)
        self.beta1_t = np.ones(shape[0], dtype=np.float32)
        self.beta2_t = np.ones(shape[0], dtype=np.float32)

    def step(self, u: np.ndarray, grad: np.ndarray, rows: np.ndarray) -> None:
        """Descend ``grad`` (len(rows), K) on ``u[rows]`` in place."""
        self.t[rows] += 1
        self.beta1_t[rows] *= np.float32(self.beta1)
        self.beta2_t[rows] *= np.float32(self.beta2)
        self.m[rows] = self.beta1 * self.m[rows] + (1 - self.beta1) * grad
        self.v[rows] = self.beta2 * self.v[rows] + (1 - self.beta2) * grad * grad
        m_hat = self.m[rows] / (1 - self.beta1_t[rows][:, None])
        v_hat = self.v[rows] / (1 - self.beta2_t[rows][:, None])
        u[rows] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


@dataclass
class OptiCAMState:
    """The optimisation of one batch: u (N, K), Adam's moments, the loss per step (one (N,) array
    per step run, so memory grows with the steps actually taken), steps used and quiet steps per
    image, the rows still optimising, and the device buffers of the split pipeline on a GPU."""

    u: np.ndarray
    adam: Adam
    losses: list[np.ndarray] = field(default_factory=list)
    used: np.ndarray | None = None
    quiet: np.ndarray | None = None
    active: np.ndarray | None = None
    device: "DeviceBuffers | None" = None

    @classmethod
    def start(cls, n: int, k: int, lr: float) -> "OptiCAMState":
        adam = Adam(lr)
        adam.init((n, k))
        return cls(np.zeros((n, k), dtype=np.float32), adam, used=np.zeros(n, dtype=np.int64),
                   quiet=np.zeros(n, dtype=np.int64), active=np.arange(n))

    def trace(self) -> np.ndarray:
        """(N, T) loss per step, NaN after an image stopped."""
        n = len(self.u)
        return np.stack(self.losses, axis=1) if self.losses else np.empty((n, 0), dtype=np.float32)


@dataclass
class DeviceBuffers:
    """Features, images and one-hot targets resident on the GPU for the split pipeline, and the
    IOBinding that runs grad_image on them."""

    binding: Any
    features: Any
    images: Any
    cotangent: Any


class OptiCAM(CamMethod):
    """Opti-CAM, eq. 5-9 of the paper, with its defaults.

    u (N, K) starts equal for every channel; w = softmax(u); S = minmax(up(sum_k w_k A_k)) with
    bilinear align_corners=False upsampling; the image is masked in pixel space (x * S, masked
    pixels black) and Adam (lr 0.1, 100 iterations) maximises the target logit of x * S
    (loss ``mask``) or minimises |f(x)_c - f(x * S)_c| (loss ``diff``). Each image has its own u;
    images that meet the early-stopping rule leave the batch, so they stop costing compute.
    """

    name = "opti-cam"
    Options = OptiCAMOptions
    cheap_options = {"iterations": 1}

    def run(self, ctx: MethodContext, options: OptiCAMOptions) -> MethodOutput:
        n, k = ctx.features.shape[:2]
        state = OptiCAMState.start(n, k, options.lr)
        if options.pipeline == "split" and ctx.bind_on_device is not None:
            state.device = _device_buffers(ctx)
        original = ctx.logits[np.arange(n), ctx.targets]
        for step in range(options.iterations):
            active = state.active
            score, grad_u = self.objective(ctx, state.u, active, options.pipeline, state.device)
            if options.loss == "mask":
                value, grad = -score, -grad_u
            else:
                diff = original[active] - score
                value, grad = np.abs(diff), -np.sign(diff)[:, None] * grad_u
            state.adam.step(state.u, grad.astype(np.float32), active)
            losses = np.full(n, np.nan, dtype=np.float32)
            losses[active] = value
            state.losses.append(losses)
            state.used[active] += 1
            if ctx.progress:
                ctx.progress(len(active))
            if options.tol is not None and step > 0:
                previous = state.losses[-2][active]
                change = np.abs(value - previous) / np.maximum(np.abs(previous), 1e-12)
                state.quiet[active] = np.where(change <= options.tol, state.quiet[active] + 1, 0)
                state.active = active[state.quiet[active] < options.patience]
                if len(state.active) == 0:
                    break
        maps, _, _ = opticam_forward(ctx.features, state.u, ctx.images)
        return MethodOutput(maps=maps, u=state.u, trace=state.trace(), steps=state.used)

    @staticmethod
    def objective(
        ctx: MethodContext, u: np.ndarray, rows: np.ndarray, pipeline: str, device: DeviceBuffers | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Target logit of the masked images and its gradient w.r.t. u (N, K), for ``rows``;
        with ``device`` buffers, the split pipeline on the GPU.

        -> score (R,), grad_u (R, K).
        """
        if device is not None:
            return _split_step_on_device(device, u, rows, len(ctx.images))
        images, features, cot = ctx.images[rows], ctx.features[rows], ctx.onehot(rows)
        if pipeline == "fused":
            out = ctx.runner.infer(
                "opticam_step", {"image": images, "features": features, "u": u[rows], "cotangent": cot}
            )
            return out["score"], out["grad_u"]
        _, masked, cache = opticam_forward(features, u[rows], images)
        out = ctx.runner.infer("grad_image", {"image": masked, "cotangent": cot})
        score = (out["logits"] * cot).sum(axis=1)
        return score, opticam_adjoint(out["grad_image"], cache)


def _device_buffers(ctx: MethodContext) -> DeviceBuffers | None:
    """Upload features, images and targets once, when the runner binds graphs on a GPU; else None
    (host path)."""
    binding = ctx.bind_on_device("grad_image") if ctx.bind_on_device else None
    if binding is None:
        return None
    cp = binding.cp
    return DeviceBuffers(binding, cp.asarray(ctx.features), cp.asarray(ctx.images), cp.asarray(ctx.onehot()))


def _split_step_on_device(device: DeviceBuffers, u: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The split step with images and features resident on the GPU (CuPy kernels + IOBinding).

    The (N, 3, H, W) images, features and one-hot targets went up once per explain call; each
    step sends u (R, K) up and brings score (R,) and grad_u (R, K) back: a few KB, while the
    masked images and their gradient never leave the device.
    """
    cp = device.binding.cp
    features_d, images_d, cot_d = device.features, device.images, device.cotangent
    if len(rows) != n:
        index = cp.asarray(rows)
        features_d, images_d, cot_d = features_d[index], images_d[index], cot_d[index]
    _, masked, cache = opticam_forward(features_d, cp.asarray(u[rows]), images_d)
    out = device.binding.run({"image": masked, "cotangent": cot_d})
    score = (out["logits"] * cot_d).sum(axis=1)
    return cp.asnumpy(score), cp.asnumpy(opticam_adjoint(out["grad_image"], cache))
