"""Export: PyTorch classifier -> explainer bundle (feature tap and backward graphs in plain ONNX)."""

from opticam_rt.export.exporter import build_graphs, export_bundle, prepare_model
from opticam_rt.export.models import BUILTIN_MODELS, ModelRecipe, imagenet_class_names, load_recipe
from opticam_rt.export.tap import TapSpec, auto_tap, candidate_layers, token_layers
from opticam_rt.export.verify import VerificationReport, verify_bundle

__all__ = [
    "BUILTIN_MODELS",
    "ModelRecipe",
    "TapSpec",
    "VerificationReport",
    "build_graphs",
    "auto_tap",
    "candidate_layers",
    "token_layers",
    "export_bundle",
    "imagenet_class_names",
    "load_recipe",
    "prepare_model",
    "verify_bundle",
]
