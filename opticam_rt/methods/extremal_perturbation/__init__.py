"""Extremal Perturbation (Fong, Patrick & Vedaldi, ICCV 2019, "Understanding Deep Networks via
Extremal Perturbations and Smooth Masks"): for each area a, the smooth mask of area a that keeps
the class score highest when the rest of the image is blurred away. The host loop runs the
bundle's image-gradient graph; the mask algebra (smooth-max generator, blur pyramid, area
regulariser, SGD) is NumPy on the host (``host``); the PyTorch reference is written apart
(``reference``)."""

from __future__ import annotations

from opticam_rt.methods.extremal_perturbation.host import (
    ExtremalPerturbation,
    ExtremalPerturbationOptions,
    MASK_GENERATOR,
)
from opticam_rt.methods.extremal_perturbation.reference import reference
from opticam_rt.methods.record import Method

__all__ = ["ExtremalPerturbation", "ExtremalPerturbationOptions", "METHOD"]

METHOD = Method(
    name="extremal-perturbation", host=ExtremalPerturbation, reference=reference, graph=None,
    cpu_order=("ov-cpu", "ort-cpu"),
    summary="Extremal Perturbation: smooth masks of fixed area that keep the class score when the rest is blurred.",
    no_graph="800 SGD steps over a sort-based area regulariser and a smooth-max mask generator: not built as "
             "an ONNX Loop yet; the host loop runs the bundle's grad_image graph",
    graph_parameters=MASK_GENERATOR,
)
