"""Maps for the sanity checks: every method through the Explainer in batches, and the input-gradient control."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from opticam_rt.bundle import Bundle

__all__ = ["CONTROL", "explain_maps", "input_gradient_maps", "method_options"]

#: Name of the control "method" in reports: the model's own input gradient.
CONTROL = "input-gradient"


def method_options(method: str, given: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The options a check runs ``method`` with: ``given[method]`` with the declared defaults
    filled in (so records made with an explicit default are reused), checked against the
    method's declaration."""
    from opticam_rt.runtime.explainer import method_class

    return method_class(method).Options.parse(dict(given.get(method, {})), method).as_dict()


def explain_maps(
    explainer: Any,
    images: np.ndarray,
    method: str,
    options: Mapping[str, Any],
    targets: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Explain images (N, 3, H, W) in batches; returns maps (N, H, W) and targets (N,) (top-1 when None)."""
    maps, used = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        wanted = None if targets is None else np.asarray(targets)[start : start + batch_size]
        result = explainer.explain(batch, method=method, targets=wanted, **options)
        maps.append(result.maps)
        used.append(result.targets)
        if progress:
            progress(len(batch))
    return np.concatenate(maps), np.concatenate(used)


def input_gradient_maps(bundle: Bundle, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """|d logit_target / d image| (Simonyan et al. 2014: max over colour channels), min-max normalised per image.

    Runs the bundle's ``grad_image`` graph directly under ONNX Runtime (CPU). images (N, 3, H, W)
    in [0, 1]; targets (N,). Returns maps (N, H, W) float32 in [0, 1] (all zero for a zero gradient).
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(bundle.graph_path("grad_image")), providers=["CPUExecutionProvider"])
    cotangent = np.zeros((len(images), bundle.manifest.num_classes), dtype=np.float32)
    cotangent[np.arange(len(images)), targets] = 1.0
    (grad,) = session.run(["grad_image"], {"image": np.ascontiguousarray(images, dtype=np.float32), "cotangent": cotangent})
    magnitude = np.abs(grad).max(axis=1)
    low = magnitude.min(axis=(1, 2), keepdims=True)
    span = magnitude.max(axis=(1, 2), keepdims=True) - low
    return np.where(span > 0, (magnitude - low) / np.where(span > 0, span, 1), 0).astype(np.float32)
