"""Trace a tensor function (forward or backward) with make_fx and export it to ONNX."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from opticam_rt.errors import ExportError
from opticam_rt.export.decompositions import decomposition_table


class _GraphModuleWrapper(nn.Module):
    """``torch.onnx.export`` wants an nn.Module; this one just calls the traced graph."""

    def __init__(self, graph_module: torch.fx.GraphModule) -> None:
        super().__init__()
        self.graph_module = graph_module

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.graph_module(*args)


def trace(fn: Callable[..., tuple[torch.Tensor, ...]], example_inputs: Sequence[torch.Tensor]) -> torch.fx.GraphModule:
    """make_fx with symbolic shapes (the batch stays dynamic) and our backward decompositions.

    Dead code (the part before the tap when the tap output is replaced) is dropped.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    def call(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # make_fx counts a bound method's ``self`` as an argument; a varargs closure hides it.
        out = fn(*args)
        return out if isinstance(out, tuple) else (out,)

    gm = make_fx(
        call,
        decomposition_table=decomposition_table(),
        tracing_mode="symbolic",
        _allow_non_fake_inputs=True,
    )(*example_inputs)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def to_onnx(
    fn: Callable[..., tuple[torch.Tensor, ...]],
    example_inputs: Sequence[torch.Tensor],
    input_names: Sequence[str],
    output_names: Sequence[str],
    opset: int,
    graph_name: str,
) -> "onnx.ModelProto":  # noqa: F821
    """Trace ``fn`` and export it with a dynamic first (batch) dimension on every input, then
    fold the backward passes' per-channel scales and crops into their convolutions.

    Raises:
        ExportError: naming the operator that could not be differentiated or translated.
    """
    try:
        gm = trace(fn, example_inputs)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001 - re-raised with the op named
        raise ExportError(f"graph {graph_name!r}: tracing the computation failed: {_explain(exc)}") from exc
    # The exporter warns once per missing torchvision op on every call; none is used here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=65536)
    # One entry for the wrapper's *args parameter, holding one spec per tensor.
    dynamic_shapes = (tuple({0: batch} for _ in example_inputs),)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _GraphModuleWrapper(gm),
                tuple(example_inputs),
                dynamo=True,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                verbose=False,
                report=False,
            )
    except Exception as exc:  # noqa: BLE001 - re-raised with the op named
        raise ExportError(f"graph {graph_name!r}: ONNX export failed: {_explain(exc)}") from exc
    model = program.model_proto
    model.graph.name = graph_name
    from opticam_rt.export.optimize import fold_backward_patterns

    fold_backward_patterns(model)
    return model


_OP_PATTERNS = (
    re.compile(r"derivative for (aten::[\w.]+) is not implemented"),
    # autograd's own wording: "the derivative for 'igamma: input' is not implemented."
    re.compile(r"derivative for '(\w+)[^']*' is not implemented"),
    # torch.onnx: "No ONNX function found for <OpOverload(op='prims.erf_inv', overload='default')>"
    re.compile(r"OpOverload\(op='([\w.]+)'"),
    re.compile(r"(aten[.:]+[\w.]+)"),
)


def _explain(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for pattern in _OP_PATTERNS:
        match = pattern.search(str(exc))
        if match:
            op = match.group(1)
            op = op if ("." in op or "::" in op) else f"aten::{op}"
            return f"operator {op} cannot be exported or differentiated ({text})"
    return text


def module_calling_op(model: nn.Module, op_name: str, example: torch.Tensor) -> str | None:
    """The dotted path of the first module whose forward calls ``op_name`` (e.g. 'aten::erfinv')."""
    from torch.utils._python_dispatch import TorchDispatchMode

    stack: list[str] = []
    found: list[str] = []
    wanted = op_name.replace("::", ".").split(".")[:2]
    # A backward op (aten.grid_sampler_2d_backward) is found through its forward op's call.
    forward = [*wanted[:-1], wanted[-1].removesuffix("_backward")]

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            name = str(func.overloadpacket).replace("::", ".").split(".")
            if not found and name[:2] in (wanted, forward) and stack:
                found.append(stack[-1])
            return func(*args, **(kwargs or {}))

    def leave(module: nn.Module, args: tuple, output: object) -> None:
        stack.pop()  # returns None: a forward hook's non-None result would replace the output

    handles = []
    for path, module in model.named_modules():
        if not path:
            continue
        handles.append(module.register_forward_pre_hook(lambda m, a, p=path: stack.append(p)))
        handles.append(module.register_forward_hook(leave))
    try:
        with torch.no_grad(), Recorder():
            model(example)
    finally:
        for h in handles:
            h.remove()
    return found[0] if found else None
