"""Guided backpropagation (Springenberg et al. 2015) for any PyTorch model, without editing it.

Inside :func:`guided_relus`, every ReLU-like call the model makes (``nn.ReLU``, ``F.relu``,
``torch.relu``, ``Tensor.relu``, ``nn.ReLU6`` / ``F.relu6`` / ``F.hardtanh(x, 0, max)``, and their
in-place forms, which run out of place here) computes the same forward value, but its backward passes only the positive part
of the incoming gradient through the units that were active:
``grad_in = 1[active] * max(grad_out, 0)``. The override is a ``TorchFunctionMode``, so it is
scoped to the ``with`` block and to this thread, and catches functional calls as well as modules;
the model's modules, hooks and parameters are not touched.

The guided backward is built from differentiable operations, so the guided gradient can itself
be differentiated (``create_graph=True``) when a loss needs it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class _GuidedClamp(torch.autograd.Function):
    """y = clamp(x, lo, hi) (hi may be None); backward: 1[lo < x < hi] * relu(grad)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lo: float, hi: float | None) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x.clamp(min=lo) if hi is None else x.clamp(lo, hi)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        active = x > ctx.lo
        if ctx.hi is not None:
            active = active & (x < ctx.hi)
        return grad.clamp(min=0) * active.to(grad.dtype), None, None


def _clamp_args(func: Callable, args: tuple, kwargs: dict) -> tuple[float, float | None] | None:
    """(lo, hi) when ``func(*args, **kwargs)`` is a ReLU-like call; None otherwise."""
    if func in _RELU:
        return 0.0, None
    if func in _RELU6:
        return 0.0, 6.0
    if func in _HARDTANH:
        lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
        hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
        if lo == 0.0:  # hardtanh(x, 0, m) is a capped ReLU; hardtanh(x, -1, 1) is not ReLU-like
            return 0.0, float(hi)
    return None


_RELU = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
_RELU6 = {F.relu6}
_HARDTANH = {F.hardtanh, F.hardtanh_}


class _GuidedMode(TorchFunctionMode):
    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        bounds = _clamp_args(func, args, kwargs)
        if bounds is None:
            return func(*args, **kwargs)
        # Always out of place, in-place forms included: an in-place write would overwrite the
        # input the guided backward saved. Callers that use the returned tensor (nn.ReLU(inplace=True),
        # x = F.relu(x, inplace=True)) see the same values.
        return _GuidedClamp.apply(args[0], *bounds)


@contextlib.contextmanager
def guided_relus() -> Iterator[None]:
    """Within the block, ReLU-like activations back-propagate guided gradients (module docstring)."""
    with _GuidedMode():
        yield
