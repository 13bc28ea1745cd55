"""Fused upsample-normalise-mask kernels of Opti-CAM / Score-CAM and their adjoint (NumPy or CuPy)."""

from opticam_rt.kernels.api import opticam_adjoint, opticam_forward, saliency_and_mask, scorecam_masked_copies
from opticam_rt.kernels.bilinear import bilinear_matrix
from opticam_rt.kernels.cache import OpticamCache

__all__ = [
    "OpticamCache",
    "bilinear_matrix",
    "opticam_adjoint",
    "opticam_forward",
    "saliency_and_mask",
    "scorecam_masked_copies",
]
