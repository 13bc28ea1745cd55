"""PyTorch reference implementations of every saliency method, independent of the ONNX path."""

from opticam_rt.reference.methods import REFERENCE_METHODS, reference_explain
from opticam_rt.reference.model import TorchClassifier

__all__ = ["REFERENCE_METHODS", "TorchClassifier", "reference_explain"]
