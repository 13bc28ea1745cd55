"""Trace a tensor function (forward or backward) with make_fx and export it to ONNX."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
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
    gm = _make_fx(fn, example_inputs)
    _drop_restrides(gm)
    unbroadcast_matmuls(gm)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _make_fx(
    fn: Callable[..., tuple[torch.Tensor, ...]], example_inputs: Sequence[torch.Tensor], locate: bool = False
) -> torch.fx.GraphModule:
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.experimental.symbolic_shapes import config as shape_config
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def call(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # make_fx counts a bound method's ``self`` as an argument; a varargs closure hides it.
        with _LinearOn2D():
            out = fn(*args)
        return out if isinstance(out, tuple) else (out,)

    # Duck shaping gives equal sizes one symbol: a batch of 2 beside a 2x2 feature map (or two
    # heads) would tie the batch to that size and silently make it static. The math attention
    # backend is plain matmul + softmax, whose backward autograd writes in ops ONNX has; the
    # fused CPU kernel's backward (_scaled_dot_product_flash_attention_for_cpu_backward) has none.
    with shape_config.patch(use_duck_shape=False), sdpa_kernel([SDPBackend.MATH]):
        return make_fx(
            call,
            decomposition_table=decomposition_table(),
            tracing_mode="symbolic",
            _allow_non_fake_inputs=True,
            record_module_stack=locate,
            record_stack_traces=locate,
        )(*example_inputs)


_SIZE_TAKING_OPS = {"view", "reshape", "_unsafe_view", "expand", "full", "empty", "zeros", "ones", "new_zeros",
                    "new_ones", "new_full", "new_empty", "as_strided", "empty_strided"}


def locate_constant_batch(fn: Callable[..., tuple[torch.Tensor, ...]], example_inputs: Sequence[torch.Tensor]) -> str:
    """' in <op> called by module <path> (<file:line>)': the first traced op with the example's
    batch size as a literal leading size, found by tracing again with module stacks recorded."""
    batch = int(example_inputs[0].shape[0])
    try:
        gm = _make_fx(fn, example_inputs, locate=True)
    except Exception:  # noqa: BLE001 - diagnosis only
        return ""
    for node in gm.graph.nodes:
        name = str(node.target).split(".")[-2] if "." in str(node.target) else str(node.target)
        if node.op != "call_function" or name not in _SIZE_TAKING_OPS:
            continue
        sizes = [a for a in node.args if isinstance(a, (list, tuple)) and a and not isinstance(a[0], torch.fx.Node)]
        if not any(a[0] == batch for a in sizes):
            continue
        stack = node.meta.get("nn_module_stack") or {}
        module = list(stack.values())[-1][0] if stack else None
        frames = [line.strip() for line in (node.meta.get("stack_trace") or "").splitlines() if line.strip().startswith("File")]
        where = frames[-1].replace("File ", "") if frames else ""
        text = f" in {node.target}"
        if module:
            text += f" called by module {module!r}"
        return text + (f" ({where})" if where else "")
    return ""


def static_batch_inputs(gm: torch.fx.GraphModule) -> list[str]:
    """Names of the traced inputs whose first (batch) dimension is no longer symbolic."""
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    fixed = []
    for i, node in enumerate(n for n in gm.graph.nodes if n.op == "placeholder"):
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and val.dim() and is_concrete_int(val.shape[0]):
            fixed.append(f"input {i}")
    return fixed


def _drop_restrides(gm: torch.fx.GraphModule) -> None:
    """Remove ``as_strided_`` calls that only restate a tensor's layout.

    Decompositions restore a channels-last layout (ConvNeXt's permutes make one) with an
    in-place ``as_strided_`` to the same sizes; the exporter's functionalisation turns that into
    ``as_strided_scatter``, which has no ONNX translation. ONNX tensors have no strides, and
    when the sizes are unchanged and every dimension longer than 1 keeps its stride, the call
    reads the same elements in the same order: dropping it changes no value.
    """
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.as_strided_.default:
            continue
        source, sizes, strides = node.args[0], node.args[1], node.args[2]
        val = source.meta.get("val") if isinstance(source, torch.fx.Node) else None
        if val is None or len(sizes) != val.dim() or len(node.args) > 3 and node.args[3]:
            continue
        same = all(
            _same_int(size, have) and (_same_int(size, 1) or _same_int(stride, val.stride(i)))
            for i, (size, stride, have) in enumerate(zip(sizes, strides, val.shape))
        )
        if same:
            node.replace_all_uses_with(source)
            gm.graph.erase_node(node)
    # Autograd's backward of such an ``as_strided_`` builds the gradient in a flat buffer
    # through ``as_strided`` views; a view of a contiguous tensor with contiguous strides (and
    # no offset) is a plain reshape, which functionalises to ops ONNX has.
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.as_strided.default:
            continue
        source, sizes, strides = node.args[0], node.args[1], node.args[2]
        offset = node.args[3] if len(node.args) > 3 else 0
        val = source.meta.get("val") if isinstance(source, torch.fx.Node) else None
        if val is None or not _same_int(offset, 0) or not val.is_contiguous():
            continue
        expected: list[object] = []
        step: object = 1
        for size in reversed(sizes):
            expected.append(step)
            step = step * (size.meta["val"] if isinstance(size, torch.fx.Node) else size)
        expected.reverse()
        if _same_int(step, val.numel()) and all(
            _same_int(size, 1) or _same_int(stride, want) for size, stride, want in zip(sizes, strides, expected)
        ):
            with gm.graph.inserting_before(node):
                view = gm.graph.call_function(torch.ops.aten.view.default, (source, list(sizes)))
            view.meta = dict(node.meta)
            node.replace_all_uses_with(view)
            gm.graph.erase_node(node)


_VIEWS = (torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default, torch.ops.aten.reshape.default)


def _broadcast_matrix(node: object) -> tuple[torch.fx.Node, bool] | None:
    """(M, transposed) when ``node`` is one 2-D matrix repeated along its leading dimensions.

    ``aten.matmul`` of a (B, m, k) input that it cannot flatten (a transposed or otherwise
    non-contiguous one, as ``nn.MultiheadAttention``'s batch-first in-projection gives) against
    a (k, n) weight is traced as ``bmm(x, expand(W, (B, k, n)))``; the backward adds the
    transpose of that expand. Returns the matrix ``M`` (a node of 2 dims, or 3 with a leading 1)
    and whether ``node`` holds ``M`` transposed.
    """
    transposed = False
    while isinstance(node, torch.fx.Node) and node.op == "call_function":
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            return None
        if node.target is torch.ops.aten.permute.default and val.dim() == 3 and list(node.args[1]) == [0, 2, 1]:
            transposed = not transposed
        elif node.target in _VIEWS:
            source = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
            # Only views that keep the matrix dimensions (merging leading broadcast dimensions).
            if not isinstance(source, torch.Tensor) or source.dim() < 3:
                return None
            if not (_same_int(source.shape[-1], val.shape[-1]) and _same_int(source.shape[-2], val.shape[-2])):
                return None
        elif node.target is torch.ops.aten.expand.default:
            source = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
            if not isinstance(source, torch.Tensor) or source.dim() < 2 or any(
                not _same_int(d, 1) for d in source.shape[:-2]
            ):
                return None
            if not (_same_int(source.shape[-1], val.shape[-1]) and _same_int(source.shape[-2], val.shape[-2])):
                return None
            return node.args[0], transposed
        else:
            return None
        node = node.args[0]
    return None


def _size_arg(graph: torch.fx.Graph, node: torch.fx.Node, dim: int) -> object:
    """Dimension ``dim`` of ``node`` as a graph argument: an int, or a ``sym_size`` node."""
    size = node.meta["val"].shape[dim]
    if isinstance(size, int):
        return size
    out = graph.call_function(torch.ops.aten.sym_size.int, (node, dim))
    out.meta["val"] = size
    return out


def unbroadcast_matmuls(gm: torch.fx.GraphModule) -> int:
    """Replace ``bmm`` against one matrix broadcast over the batch by one ``mm``. Returns the count.

    ``bmm(x, expand(W))`` (see :func:`_broadcast_matrix`) exports as an ONNX Expand that
    materialises W once per batch entry: for ViT-B/16's in-projection (768 x 2304) over 197
    tokens, 1.39 GB per block, plus as much again for its transpose in every backward graph,
    alive from the forward part to the backward part (the full-size ViT's verification reached
    24 GB). ``x.reshape(B * m, k) @ W`` computes the same dot products (the BLAS may block the
    sums differently: float32 rounding only). With the broadcast matrix on the left,
    ``M @ y[i]`` is ``(y^T @ M^T)^T``.
    """
    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not torch.ops.aten.bmm.default:
            continue
        left, right = node.args[0], node.args[1]
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        aten = torch.ops.aten
        matrix = _broadcast_matrix(right)
        with graph.inserting_before(node):
            if matrix is not None and _broadcast_matrix(left) is None:
                m = _as_matrix(graph, *matrix)
                flat = graph.call_function(aten.reshape.default, (left, [-1, _size_arg(graph, left, 2)]))
                product = graph.call_function(aten.mm.default, (flat, m))
                sizes = [_size_arg(graph, left, 0), _size_arg(graph, left, 1), _size_arg(graph, right, 2)]
                out = graph.call_function(aten.view.default, (product, sizes))
            else:
                matrix = _broadcast_matrix(left)
                if matrix is None or _broadcast_matrix(right) is not None:
                    continue
                # M (m, k) @ y[i] (k, n) = (y[i]^T (n, k) @ M^T (k, m))^T
                m_t = _as_matrix(graph, matrix[0], not matrix[1])
                y_t = graph.call_function(aten.permute.default, (right, [0, 2, 1]))
                flat = graph.call_function(aten.reshape.default, (y_t, [-1, _size_arg(graph, right, 1)]))
                product = graph.call_function(aten.mm.default, (flat, m_t))
                sizes = [_size_arg(graph, right, 0), _size_arg(graph, right, 2), _size_arg(graph, left, 1)]
                back = graph.call_function(aten.view.default, (product, sizes))
                transposed = graph.call_function(aten.permute.default, (back, [0, 2, 1]))
                out = graph.call_function(aten.contiguous.default, (transposed,))
        out.meta["val"] = val
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        count += 1
    if count:
        graph.eliminate_dead_code()
        gm.recompile()
    return count


def _as_matrix(graph: torch.fx.Graph, source: torch.fx.Node, transposed: bool) -> torch.fx.Node:
    """``source`` (2-D, or with leading 1s) as a 2-D matrix, transposed if asked."""
    shape = source.meta["val"].shape
    matrix = source
    if len(shape) > 2:
        sizes = [_size_arg(graph, source, -2), _size_arg(graph, source, -1)]
        matrix = graph.call_function(torch.ops.aten.view.default, (source, sizes))
    if transposed:
        matrix = graph.call_function(torch.ops.aten.permute.default, (matrix, [1, 0]))
    return matrix


def _same_int(a: object, b: object) -> bool:
    """Equal as integers, for plain ints and symbolic sizes (SymInt or fx nodes holding one)."""
    a = a.meta.get("val") if isinstance(a, torch.fx.Node) else a
    b = b.meta.get("val") if isinstance(b, torch.fx.Node) else b
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an undecidable symbolic comparison counts as different
        return False


class _LinearOn2D(torch.overrides.TorchFunctionMode):
    """Runs ``F.linear`` on inputs of 3 or more dimensions as a 2-D linear between reshapes.

    Under ``torch.func.grad``, functorch's rule for a 3-D ``linear`` reads the input's sizes as
    plain integers, which fixes the symbolic batch dimension to the example's (transformer MLPs
    and ``nn.MultiheadAttention`` projections, ConvNeXt's channels-last MLP). Same arithmetic.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in (F.linear, torch._C._nn.linear) and args and isinstance(args[0], torch.Tensor) and args[0].dim() > 2:
            x, weight = args[0], args[1] if len(args) > 1 else kwargs["weight"]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            flat = func(x.reshape(-1, x.shape[-1]), weight, bias)
            return flat.reshape(*x.shape[:-1], flat.shape[-1])
        return func(*args, **kwargs)


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
    fixed = static_batch_inputs(gm)
    if fixed:
        raise ExportError(
            f"graph {graph_name!r}: the batch dimension of {', '.join(fixed)} became the constant "
            f"{example_inputs[0].shape[0]} while tracing{locate_constant_batch(fn, example_inputs)}; an operation reads the batch "
            "size as a plain Python int (int(x.shape[0]), .item(), a size passed to numpy): compute it with tensor "
            "ops (x.shape[0] kept symbolic, reshape(-1, ...)), or report the model to opticam-rt"
        )
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
