"""Opti-CAM (Zhang et al. 2023, arXiv 2301.07002): per-image channel weights optimised by Adam so
the masked image keeps the class score. Larger than the other methods, so split in three: the
host loop (``host``), the explainer graph's Loop (``graph``) and the PyTorch reference."""

from __future__ import annotations

from opticam_rt.method_defaults import ADAM
from opticam_rt.methods.opti_cam.graph import opti_cam_graph
from opticam_rt.methods.opti_cam.host import Adam, OptiCAM, OptiCAMOptions
from opticam_rt.methods.opti_cam.reference import reference
from opticam_rt.methods.record import Method

__all__ = ["Adam", "METHOD", "OptiCAM", "OptiCAMOptions"]

METHOD = Method(
    name="opti-cam", host=OptiCAM, reference=reference, graph=opti_cam_graph, cpu_order=("ov-cpu", "ort-cpu"),
    summary="Opti-CAM: channel weights optimised per image so the masked image keeps the class score.",
    # An unset tol (no early stopping) is 0 in the graph, where an input cannot be absent.
    graph_options={"iterations": None, "lr": None, "tol": 0.0, "patience": None},
    graph_outputs={
        "loss": {"dtype": "float32", "shape": ["iterations", "N"], "doc": "NaN after an image stopped"},
        "steps": {"dtype": "int64", "shape": ["N"], "doc": "Adam steps each image used"},
    },
    graph_parameters={"loss": "mask", "optimizer": "adam", **ADAM, "u_init": 0.0},
)
