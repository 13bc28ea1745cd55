"""The Explainer: load a bundle once, explain batches of images with any registered method."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from opticam_rt.bundle import Bundle, load_bundle
from opticam_rt.errors import InputError
from opticam_rt.runtime.cams import MethodContext, softmax
from opticam_rt.runtime.checks import check_finite_maps
from opticam_rt.runtime.registry import METHODS
from opticam_rt.runtime.runners import OrtRunner, resolve_backend

#: Registered method names, in registry order (also the CLI's choices).
METHOD_NAMES = tuple(METHODS)


@dataclass
class Explanation:
    """Saliency maps and the scores around them, for a batch of N images.

    maps (N, H, W) float32 in [0, 1] at model resolution; targets (N,) int; scores (N,) and
    masked_scores (N,) are the target's softmax probability on x and on x * map. For Opti-CAM,
    trace (N, iterations) holds the loss per step (NaN after an image stopped early) and
    iterations (N,) the steps each image used.
    """

    method: str
    backend: str
    maps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    masked_scores: np.ndarray
    class_names: list[str | None]
    seconds: float
    trace: np.ndarray | None = None
    iterations: np.ndarray | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def record(self, i: int) -> dict[str, Any]:
        """Image i as a JSON-ready dict."""
        out: dict[str, Any] = {
            "method": self.method,
            "backend": self.backend,
            "target": int(self.targets[i]),
            "class_name": self.class_names[i],
            "score": float(self.scores[i]),
            "masked_score": float(self.masked_scores[i]),
        }
        if self.iterations is not None:
            out["iterations"] = int(self.iterations[i])
            out["final_loss"] = float(self.trace[i, int(self.iterations[i]) - 1]) if self.trace is not None else None
        return out


class Explainer:
    """Saliency maps from an exported bundle.

    Args:
        bundle: a bundle directory or a loaded Bundle.
        backend: ``auto`` (best ONNX Runtime provider), ``ort-cpu``, ``ort-cuda``, ``ort-trt``, or
            ``torch`` (the PyTorch reference; needs the model's recipe importable).
        threads: ONNX Runtime intra-op threads (default: all cores).
    """

    def __init__(self, bundle: str | Path | Bundle, backend: str = "auto", threads: int | None = None) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        self.backend = resolve_backend(backend)
        self._torch: Any = None
        if self.backend == "torch":
            from opticam_rt.reference import TorchClassifier

            self._torch = TorchClassifier.from_manifest(self.bundle.manifest)
            self.runner = None
        else:
            self.runner = OrtRunner(self.bundle, self.backend, threads).activate()

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.bundle.manifest.input_size)  # type: ignore[return-value]

    def close(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()

    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_images(self, images: np.ndarray) -> np.ndarray:
        """Validate (N, 3, H, W) float pixels in [0, 1] at the bundle's input size."""
        images = np.asarray(images)
        h, w = self.input_size
        if images.ndim != 4 or images.shape[1:] != (3, h, w):
            raise InputError(f"images must have shape (N, 3, {h}, {w}), got {images.shape}")
        if images.size and (not np.isfinite(images).all() or images.min() < 0 or images.max() > 1.0 + 1e-6):
            raise InputError(
                f"image pixels must be in [0, 1] (got {images.min():.3g}..{images.max():.3g}); divide 0..255 data by 255"
            )
        return np.ascontiguousarray(images, dtype=np.float32)

    def check_targets(self, targets: Sequence[int] | np.ndarray | int | None, n: int, logits: np.ndarray) -> np.ndarray:
        if targets is None:
            return logits.argmax(axis=1)
        arr = np.full(n, targets) if np.isscalar(targets) else np.asarray(targets)
        if arr.shape != (n,):
            raise InputError(f"targets must be one class index per image ({n}), got shape {arr.shape}")
        c = self.bundle.manifest.num_classes
        for i, t in enumerate(arr):
            if not float(t).is_integer() or not 0 <= int(t) < c:
                raise InputError(f"target class {t} of image {i} is out of range: the model has classes 0..{c - 1}")
        return arr.astype(np.int64)

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images (N, 3, H, W) -> logits (N, C), features (N, K, h, w)."""
        images = self.check_images(images)
        if self.runner is None:
            import torch

            with torch.no_grad():
                logits, feats = self._torch.logits_and_features(torch.from_numpy(images))
            return logits.numpy(), feats.numpy()
        out = self.runner.infer("forward", {"image": images})
        return out["logits"], out["features"]

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """images (N, 3, H, W) -> softmax probabilities (N, C)."""
        return softmax(self.predict(images)[0], axis=1)

    def explain(
        self,
        images: np.ndarray,
        method: str = "opti-cam",
        targets: Sequence[int] | np.ndarray | int | None = None,
        progress: Callable[[int], None] | None = None,
        **options: Any,
    ) -> Explanation:
        """Explain a batch. images (N, 3, H, W) float32 in [0, 1]; targets None means top-1.

        Options go to the method (Opti-CAM: iterations, lr, loss, tol, patience, pipeline).
        """
        if method not in METHODS:
            raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        start = time.perf_counter()
        images = self.check_images(images)
        logits, features = self.predict(images)
        targets_arr = self.check_targets(targets, len(images), logits)
        if self.runner is None:
            return self._explain_torch(images, method, targets_arr, start, **options)
        ctx = MethodContext(self.runner, images, targets_arr, logits, features, progress)
        maps = METHODS[method]().saliency(ctx, **options)
        check_finite_maps(maps, method, options, self.bundle.manifest.verification)
        scores = softmax(logits, axis=1)[np.arange(len(images)), targets_arr]
        masked = self.predict_proba(images * maps[:, None])[np.arange(len(images)), targets_arr]
        return Explanation(
            method=method,
            backend=self.backend,
            maps=np.asarray(maps, dtype=np.float32),
            targets=targets_arr,
            scores=scores,
            masked_scores=masked,
            class_names=[self.bundle.class_name(int(t)) for t in targets_arr],
            seconds=time.perf_counter() - start,
            trace=ctx.extras.get("trace"),
            iterations=ctx.extras.get("iterations"),
            extras={k: v for k, v in ctx.extras.items() if k == "u"},
        )

    def _explain_torch(self, images: np.ndarray, method: str, targets: np.ndarray, start: float, **options: Any) -> Explanation:
        import torch

        from opticam_rt.reference import reference_explain

        allowed = {"opti-cam": ("iterations", "lr", "loss")}.get(method, ())
        kept = {k: v for k, v in options.items() if k in allowed}
        out = reference_explain(self._torch, torch.from_numpy(images), torch.from_numpy(targets), method, **kept)
        trace = out["trace"].numpy() if "trace" in out else None
        return Explanation(
            method=method,
            backend="torch",
            maps=out["maps"].numpy().astype(np.float32),
            targets=targets,
            scores=out["scores"].numpy(),
            masked_scores=out["masked_scores"].numpy(),
            class_names=[self.bundle.class_name(int(t)) for t in targets],
            seconds=time.perf_counter() - start,
            trace=trace,
            iterations=np.full(len(images), trace.shape[1]) if trace is not None else None,
        )
