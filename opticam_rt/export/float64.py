"""Run an exported ONNX graph's own arithmetic in float64.

Verification asks whether a graph's backward rules are right. ONNX Runtime runs the graph in
float32, where an activation within float32 rounding of a kink (hardswish's derivative jumps at
+-3, a ReLU's at 0, a max-pool near-tie) may take the other branch than float64 does; such a
flip
moves a gradient by far more than rounding, without any rule being wrong. The same graph with
every float32 tensor made float64 takes the float64 branch wherever the reference does, so its
distance from PyTorch float64 autograd is rounding (1e-13 and below) when the rules are right
and the size of the error when one is wrong (docs/decisions.md).

ONNX Runtime's CPU provider has no float64 Conv or ConvTranspose kernel, so the float64 graph
runs under the ONNX reference evaluator (``onnx.reference``), with those two ops computed by
PyTorch's float64 convolutions (the reference's own are per-element Python loops).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_conv import Conv as _ReferenceConv
from onnx.reference.ops.op_conv_transpose import ConvTranspose as _ReferenceConvTranspose

_FLOAT, _DOUBLE = TensorProto.FLOAT, TensorProto.DOUBLE


def _tensor_to_float64(tensor: TensorProto) -> None:
    if tensor.data_type == _FLOAT:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name))


def _graph_to_float64(graph: onnx.GraphProto) -> None:
    for tensor in graph.initializer:
        _tensor_to_float64(tensor)
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.type.tensor_type.elem_type == _FLOAT:
            info.type.tensor_type.elem_type = _DOUBLE
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                _tensor_to_float64(attribute.t)
            elif attribute.type == onnx.AttributeProto.INT and attribute.name in ("to", "dtype"):
                if attribute.i == _FLOAT:
                    attribute.i = _DOUBLE
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                _graph_to_float64(sub)


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose float32 tensors (inputs, outputs, weights, constants, Casts to
    float) are all float64; every op and every other dtype is kept."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _graph_to_float64(copy.graph)
    return copy


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A torch view of ``array``, copied when it is read-only (the evaluator's initializers are)."""
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _symmetric(pads: list[int], n: int) -> bool:
    return all(pads[i] == pads[i + n] for i in range(n))


class Conv(OpRun):
    """ONNX Conv by ``torch.nn.functional.conv{1,2,3}d`` (float64 stays float64)."""

    def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None, pads=None,
             strides=None):  # fmt: skip
        n = X.ndim - 2
        if (auto_pad not in (None, "NOTSET")) or n not in (1, 2, 3):
            return _ReferenceConv._run(self, X, W, B, auto_pad, dilations, group, kernel_shape, pads, strides)
        pads = list(pads) if pads is not None else [0] * (2 * n)
        x = _tensor(X)
        if not _symmetric(pads, n):
            # F.pad takes (last begin, last end, ..., first begin, first end)
            x = F.pad(x, [p for i in reversed(range(n)) for p in (pads[i], pads[i + n])])
            pads = [0] * (2 * n)
        conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
        y = conv(x, _tensor(W), None if B is None else _tensor(B),
                 stride=tuple(strides or [1] * n), padding=tuple(pads[:n]), dilation=tuple(dilations or [1] * n),
                 groups=int(group or 1))  # fmt: skip
        return (y.numpy(),)


class ConvTranspose(OpRun):
    """ONNX ConvTranspose by ``torch.nn.functional.conv_transpose{1,2,3}d``: computed unpadded,
    then cropped by the ONNX pads (which may differ at the two ends)."""

    def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None,
             output_padding=None, output_shape=None, pads=None, strides=None):  # fmt: skip
        n = X.ndim - 2
        if (auto_pad not in (None, "NOTSET")) or output_shape is not None or n not in (1, 2, 3):
            return _ReferenceConvTranspose._run(self, X, W, B, auto_pad, dilations, group, kernel_shape,
                                                output_padding, output_shape, pads, strides)  # fmt: skip
        pads = list(pads) if pads is not None else [0] * (2 * n)
        strides = list(strides or [1] * n)
        dilations = list(dilations or [1] * n)
        extra = list(output_padding or [0] * n)[:n]
        conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
        x = _tensor(X)
        w = _tensor(W)
        if all(e < max(s, d) for e, s, d in zip(extra, strides, dilations)):
            y = conv(x, w, None, stride=tuple(strides), padding=0, output_padding=tuple(extra),
                     groups=int(group or 1), dilation=tuple(dilations))  # fmt: skip
        else:  # torch refuses such an output padding: add the zero rows/columns it stands for
            y = conv(x, w, None, stride=tuple(strides), padding=0, groups=int(group or 1), dilation=tuple(dilations))
            y = F.pad(y, [p for i in reversed(range(n)) for p in (0, extra[i])])
        crop = tuple([slice(None), slice(None)] + [slice(pads[i], y.shape[2 + i] - pads[i + n]) for i in range(n)])
        y = y[crop]
        if B is not None:
            y = y + _tensor(B).reshape(1, -1, *([1] * n))
        return (y.contiguous().numpy(),)


class Float64Graph:
    """An ONNX graph (with its external weights) made float64, run by the ONNX reference
    evaluator with PyTorch's float64 convolutions."""

    def __init__(self, path: str | Path) -> None:
        model = onnx.load(str(path), load_external_data=True)
        self.input_names = [i.name for i in model.graph.input]
        self.evaluator = ReferenceEvaluator(to_float64(model), new_ops=[Conv, ConvTranspose])

    def run(self, feeds: dict[str, Any]) -> list[np.ndarray]:
        cast = {}
        for name, value in feeds.items():
            value = np.asarray(value)
            cast[name] = value.astype(np.float64) if value.dtype == np.float32 else value
        return list(self.evaluator.run(None, cast))
