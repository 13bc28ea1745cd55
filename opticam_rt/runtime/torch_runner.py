"""The PyTorch reference as a runner (``torch``): the bundle graphs by autograd, the methods by
the independent reference implementations in ``opticam_rt.reference``."""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np

from opticam_rt.bundle import Bundle
from opticam_rt.errors import BackendUnavailableError
from opticam_rt.methods.contract import MethodContext, MethodImplementation, MethodOutput
from opticam_rt.runtime.runner import Runner


def torch_available(backend: str = "torch") -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class TorchRunner(Runner):
    """PyTorch eager on the model the bundle was exported from.

    Args:
        threads: torch intra-op threads, set process-wide on activate (None: leave as is).
        model: the model to rebuild (built-in name, ``pkg.module:factory``, ``file.py:factory``);
            None: the manifest's, which is imported only when it is a built-in name or the bundle's
            code is trusted (``trust_code`` or OPTICAM_RT_TRUST_BUNDLE_CODE=1; else UntrustedCodeError).
        trust_code: import the model code the manifest names.

    Calls are serialised by ``self.lock``: the classifier captures the tap output with a forward
    hook registered per call on the one shared module, so two threads' calls would see each
    other's hooks (4 threads sharing an Explainer got wrong maps and autograd errors).
    """

    name = "torch"

    def __init__(self, bundle: Bundle, threads: int | None = None, model: str | None = None,
                 trust_code: bool = False) -> None:
        super().__init__(bundle)
        self.threads = threads
        self.model = model
        self.trust_code = trust_code
        self.classifier: Any = None

    def activate_impl(self) -> None:
        if not torch_available():
            raise BackendUnavailableError("backend 'torch' needs PyTorch: pip install 'opticam-rt[all]'")
        import torch

        from opticam_rt.reference import TorchClassifier

        if self.threads:
            torch.set_num_threads(self.threads)
        self.classifier = TorchClassifier.from_manifest(
            self.bundle.manifest, self.model, self.trust_code, where=f"bundle {self.bundle.path}"
        )

    def deactivate_impl(self) -> None:
        self.classifier = None

    def infer_impl(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self.lock:
            return self._infer(graph, feeds)

    def _infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from opticam_rt.methods.torch_ops import upsample_normalise

        clf = self.classifier
        t = {k: torch.from_numpy(v) for k, v in feeds.items()}
        if graph == "forward":
            with torch.no_grad():
                logits, features = clf.logits_and_features(t["image"])
            return {"logits": logits.numpy(), "features": features.numpy()}
        if graph == "head":
            with torch.no_grad():
                logits, _ = clf.logits_and_features(torch.zeros(len(t["features"]), 3, *self.bundle.manifest.input_size),
                                                    replace=t["features"])
            return {"logits": logits.numpy()}
        if graph == "grad_features":
            with torch.no_grad():
                _, features = clf.logits_and_features(t["image"])
            features.requires_grad_(True)
            logits, _ = clf.logits_and_features(t["image"], replace=features)
            (grad,) = torch.autograd.grad((logits * t["cotangent"]).sum(), features)
            return {"logits": logits.detach().numpy(), "features": features.detach().numpy(), "grad_features": grad.numpy()}
        if graph == "grad_image":
            image = t["image"].clone().requires_grad_(True)
            logits = clf.logits(image)
            (grad,) = torch.autograd.grad((logits * t["cotangent"]).sum(), image)
            return {"logits": logits.detach().numpy(), "grad_image": grad.numpy()}
        # opticam_step: the masked image's cotangent-weighted score and its gradient w.r.t. u.
        u = t["u"].clone().requires_grad_(True)
        size = tuple(self.bundle.manifest.input_size)
        saliency = upsample_normalise((torch.softmax(u, dim=1)[:, :, None, None] * t["features"]).sum(1), size)
        score = (clf.logits(t["image"] * saliency.unsqueeze(1)) * t["cotangent"]).sum(1)
        (grad,) = torch.autograd.grad(score.sum(), u)
        return {"score": score.detach().numpy(), "grad_u": grad.numpy()}


def reference_method(runner: TorchRunner, method: str) -> MethodImplementation:
    """The independent PyTorch reference of ``method`` (its registration's ``reference``), run on
    the runner's rebuilt model; the backend registry hands it to the Explainer under ``torch``."""
    from opticam_rt.methods import method_record

    return ReferenceMethod(method_record(method).reference)


class ReferenceMethod(MethodImplementation):
    """A reference function ``fn(classifier, images, targets, size, **options)`` behind the method
    contract. It honours the keyword options its signature names (Opti-CAM: iterations, lr,
    loss); options whose values differ from the declared defaults are passed on."""

    def __init__(self, fn: Callable[..., dict[str, Any]]) -> None:
        self.fn = fn
        params = list(inspect.signature(fn).parameters)[4:]
        self.honours = frozenset(params)

    def run(self, ctx: MethodContext, options: Any) -> MethodOutput:
        import torch

        defaults = type(options)()
        given = {k: getattr(options, k) for k in self.honours if getattr(options, k) != getattr(defaults, k)}
        runner: TorchRunner = ctx.runner  # type: ignore[assignment]
        size = (ctx.images.shape[2], ctx.images.shape[3])
        with runner.lock:  # the shared model's per-call hooks (see TorchRunner)
            out = self.fn(runner.classifier, torch.from_numpy(ctx.images), torch.from_numpy(ctx.targets), size, **given)
        trace = out["trace"].numpy() if "trace" in out else None
        return MethodOutput(
            maps=out["maps"].numpy().astype(np.float32),
            u=out["u"].numpy() if "u" in out else None,
            trace=trace,
            steps=np.full(len(ctx.images), trace.shape[1], dtype=np.int64) if trace is not None else None,
        )
