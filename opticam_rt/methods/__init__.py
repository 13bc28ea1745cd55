"""The saliency methods, each registered once.

One module per method holds its options, its host implementation, its explainer-graph builder,
its PyTorch reference and its engine preference, and ends with a ``Method`` record
(``record.py``). ``REGISTRY`` below lists them; everything keyed by a method name (the runtime's
``METHODS`` and ``auto``, the graph export, the ``torch`` backend, the CLI, the parity tests)
reads it. Adding a method: write its module, add it to ``_MODULES``.
"""

from __future__ import annotations

from opticam_rt.errors import InputError
from opticam_rt.methods import (
    ablation_cam,
    extremal_perturbation,
    fake_cam,
    grad_cam,
    grad_cam_pp,
    hires_cam,
    layer_cam,
    opti_cam,
    score_cam,
    xgrad_cam,
)
from opticam_rt.methods.conceptor import conceptor_method
from opticam_rt.methods.record import Method

__all__ = ["Method", "REGISTRY", "method_record"]

#: Registration order is the CLI's order of choices.
_MODULES = (opti_cam, grad_cam, grad_cam_pp, xgrad_cam, layer_cam, hires_cam, score_cam, ablation_cam, fake_cam,
            extremal_perturbation)

REGISTRY: dict[str, Method] = {module.METHOD.name: module.METHOD for module in _MODULES}
#: Conceptor-CAM wrappers registered by name (``conceptor_method`` wraps any of them).
for _base in ("grad-cam", "opti-cam"):
    _wrapped = conceptor_method(REGISTRY[_base])
    REGISTRY[_wrapped.name] = _wrapped

if len({module.METHOD.name for module in _MODULES}) != len(_MODULES):
    raise TypeError("two method modules register the same name")


def method_record(name: str) -> Method:
    """The registration of ``name``; InputError naming the choices otherwise."""
    if name not in REGISTRY:
        raise InputError(f"unknown method {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]
