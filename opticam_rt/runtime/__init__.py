"""Runtime: runners over ONNX Runtime, the CAM methods, Opti-CAM and the Explainer."""

from opticam_rt.runtime.explainer import METHOD_NAMES, Explainer, Explanation
from opticam_rt.runtime.runners import BACKENDS, OrtRunner, Runner, available_backends, resolve_backend

__all__ = [
    "BACKENDS",
    "METHOD_NAMES",
    "Explainer",
    "Explanation",
    "OrtRunner",
    "Runner",
    "available_backends",
    "resolve_backend",
]
