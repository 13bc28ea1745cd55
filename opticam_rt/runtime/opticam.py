"""Opti-CAM (Zhang et al. 2023, arXiv 2301.07002) on a runner: per-image channel weights by Adam."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.kernels import opticam_adjoint, opticam_forward
from opticam_rt.runtime.cams import CamMethod, MethodContext

PIPELINES = ("fused", "split")
LOSSES = ("mask", "diff")


@dataclass
class Adam:
    """Adam (Kingma & Ba 2015) on u (N, K) with a step count per row, so rows can stop early.

    Same update and defaults as ``torch.optim.Adam`` (betas 0.9/0.999, eps 1e-8, bias correction).
    """

    lr: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def init(self, shape: tuple[int, int]) -> None:
        self.m = np.zeros(shape, dtype=np.float32)
        self.v = np.zeros(shape, dtype=np.float32)
        self.t = np.zeros(shape[0], dtype=np.int64)

    def step(self, u: np.ndarray, grad: np.ndarray, rows: np.ndarray) -> None:
        """Descend ``grad`` (len(rows), K) on ``u[rows]`` in place."""
        self.t[rows] += 1
        t = self.t[rows][:, None].astype(np.float32)
        self.m[rows] = self.beta1 * self.m[rows] + (1 - self.beta1) * grad
        self.v[rows] = self.beta2 * self.v[rows] + (1 - self.beta2) * grad * grad
        m_hat = self.m[rows] / (1 - self.beta1**t)
        v_hat = self.v[rows] / (1 - self.beta2**t)
        u[rows] -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class OptiCAM(CamMethod):
    """Opti-CAM, eq. 5-9 of the paper, with its defaults.

    u (N, K) starts equal for every channel; w = softmax(u); S = minmax(up(sum_k w_k A_k)) with
    bilinear align_corners=False upsampling; the image is masked in pixel space (x * S, masked
    pixels black) and Adam (lr 0.1, 100 iterations) maximises the target logit of x * S
    (loss ``mask``) or minimises |f(x)_c - f(x * S)_c| (loss ``diff``). Each image has its own u.

    Options:
        iterations, lr, loss: as above.
        tol: early stopping. An image stops once its loss changed by at most ``tol`` (relative)
            for ``patience`` consecutive steps; stopped images leave the batch, so they stop
            costing compute. None (default) runs every iteration, as the paper.
        pipeline: ``fused`` runs the opticam_step graph (mask path inside ONNX); ``split`` runs
            the NumPy/CuPy mask kernel, the grad_image graph and the kernel adjoint.
    """

    name = "opti-cam"
    needs_gradients = True

    def saliency(
        self,
        ctx: MethodContext,
        iterations: int = 100,
        lr: float = 0.1,
        loss: str = "mask",
        tol: float | None = None,
        patience: int = 5,
        pipeline: str = "fused",
        **options: Any,
    ) -> np.ndarray:
        if loss not in LOSSES:
            raise InputError(f"Opti-CAM loss {loss!r} is not one of {LOSSES}")
        if pipeline not in PIPELINES:
            raise InputError(f"Opti-CAM pipeline {pipeline!r} is not one of {PIPELINES}")
        if iterations < 1:
            raise InputError(f"iterations must be >= 1, got {iterations}")
        if pipeline == "split" and getattr(ctx.runner, "name", "") in ("ort-cuda", "ort-trt"):
            from opticam_rt.runtime.device import DeviceBinding, cupy_or_none

            if cupy_or_none() is not None:
                ctx.extras["device_binding"] = DeviceBinding(ctx.runner, "grad_image")
        n, k = ctx.features.shape[:2]
        u = np.zeros((n, k), dtype=np.float32)
        adam = Adam(lr)
        adam.init(u.shape)
        original = ctx.logits[np.arange(n), ctx.targets]
        trace = np.full((n, iterations), np.nan, dtype=np.float32)
        used = np.zeros(n, dtype=np.int64)
        quiet = np.zeros(n, dtype=np.int64)
        active = np.arange(n)
        for step in range(iterations):
            score, grad_u = self.objective(ctx, u, active, pipeline)
            if loss == "mask":
                value, grad = -score, -grad_u
            else:
                diff = original[active] - score
                value, grad = np.abs(diff), -np.sign(diff)[:, None] * grad_u
            adam.step(u, grad.astype(np.float32), active)
            trace[active, step] = value
            used[active] += 1
            if ctx.progress:
                ctx.progress(len(active))
            if tol is not None and step > 0:
                previous = trace[active, step - 1]
                change = np.abs(value - previous) / np.maximum(np.abs(previous), 1e-12)
                quiet[active] = np.where(change <= tol, quiet[active] + 1, 0)
                active = active[quiet[active] < patience]
                if len(active) == 0:
                    break
        ctx.extras.pop("device_binding", None)
        ctx.extras.pop("device_arrays", None)
        ctx.extras.update(u=u, trace=trace, iterations=used)
        maps, _, _ = opticam_forward(ctx.features, u, ctx.images)
        return maps

    @staticmethod
    def objective(ctx: MethodContext, u: np.ndarray, rows: np.ndarray, pipeline: str) -> tuple[np.ndarray, np.ndarray]:
        """Target logit of the masked images and its gradient w.r.t. u, for ``rows``.

        -> score (R,), grad_u (R, K).
        """
        if pipeline == "split" and "device_binding" in ctx.extras:
            return _split_step_on_device(ctx, u, rows)
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


def _split_step_on_device(ctx: MethodContext, u: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The split step with images and features resident on the GPU (CuPy kernels + IOBinding).

    The (N, 3, H, W) images, features and one-hot targets go up once per explain call; each
    step sends u (R, K) up and brings score (R,) and grad_u (R, K) back: a few KB, while the
    masked images and their gradient never leave the device.
    """
    device = ctx.extras["device_binding"]
    cp = device.cp
    if "device_arrays" not in ctx.extras:
        ctx.extras["device_arrays"] = (cp.asarray(ctx.features), cp.asarray(ctx.images), cp.asarray(ctx.onehot()))
    features_d, images_d, cot_d = ctx.extras["device_arrays"]
    if len(rows) != len(ctx.images):
        index = cp.asarray(rows)
        features_d, images_d, cot_d = features_d[index], images_d[index], cot_d[index]
    _, masked, cache = opticam_forward(features_d, cp.asarray(u[rows]), images_d)
    out = device.run({"image": masked, "cotangent": cot_d})
    score = (out["logits"] * cot_d).sum(axis=1)
    return cp.asnumpy(score), cp.asnumpy(opticam_adjoint(out["grad_image"], cache))
