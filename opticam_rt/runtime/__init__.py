"""Runtime: runners (one per backend), the saliency methods, Opti-CAM and the Explainer."""

from opticam_rt.runtime.explainer import METHOD_NAMES, Explainer
from opticam_rt.runtime.explanation import Explanation
from opticam_rt.runtime.runner import Capabilities, Runner
from opticam_rt.runtime.runners import BACKENDS, RUNNERS, available_backends, create_runner, resolve_backend

__all__ = [
    "BACKENDS",
    "METHOD_NAMES",
    "RUNNERS",
    "Capabilities",
    "Explainer",
    "Explanation",
    "Runner",
    "available_backends",
    "create_runner",
    "resolve_backend",
]
