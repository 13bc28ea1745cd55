"""ONNX graph rewrites that fold the backward graphs' per-channel scales and crops into convolutions.

The exporter's backward graphs carry two patterns ONNX Runtime's optimiser leaves alone:

* ``Mul(g, c) -> Conv``: a BatchNorm's backward scales the gradient per channel right before
  the convolution's input gradient. The scale folds into the Conv weight's input channels.
* ``Conv -> Pad(negative)``: the backward of an explicit ``F.pad`` (TensorFlow-style "same"
  padding, as in EfficientNet) crops the convolution's output. The crop folds into the Conv's
  pads (or, for ConvTranspose, its pads grow).

Both are exact rewrites of the arithmetic (the scale is applied to the weights instead of the
activations: float rounding differs by ~1 ulp). ONNX Runtime fuses the forward-direction
versions itself (Conv -> Mul, Pad -> Conv); these are their backward twins. Measured on
EfficientNet-Lite0's image-gradient graph in docs/perf-notes.md.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

_CONVS = ("Conv", "ConvTranspose")


class _Graph:
    """Index of one ONNX graph: producers, consumers and constant values by tensor name."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.numpy_helper = numpy_helper
        self.initializers = {t.name: t for t in self.graph.initializer}
        self.constant_nodes = {n.output[0]: n for n in self.graph.node if n.op_type == "Constant" and n.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.producers = {o: n for n in self.graph.node for o in n.output}
        self.graph_outputs = {o.name for o in self.graph.output}
        self.removed: set[int] = set()
        self.fresh = 0

    def value(self, name: str) -> np.ndarray | None:
        """The constant behind ``name`` (initializer or Constant node), else None."""
        if name in self.initializers:
            return self.numpy_helper.to_array(self.initializers[name])
        node = self.constant_nodes.get(name)
        if node is not None:
            for attr in node.attribute:
                if attr.name == "value":
                    return self.numpy_helper.to_array(attr.t)
        return None

    def sole_consumer(self, name: str) -> Any | None:
        users = self.consumers.get(name, [])
        if len(users) != 1 or name in self.graph_outputs:
            return None
        return users[0]

    def add_initializer(self, array: np.ndarray, hint: str) -> str:
        self.fresh += 1
        name = f"{hint}_folded_{self.fresh}"
        self.graph.initializer.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        self.initializers[name] = self.graph.initializer[-1]
        return name

    def rename_input(self, node: Any, old: str, new: str) -> None:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        self.consumers[old] = [n for n in self.consumers[old] if n is not node]
        self.consumers[new].append(node)

    def finish(self) -> None:
        """Drop removed nodes and initializers nothing reads any more."""
        keep = [n for n in self.graph.node if id(n) not in self.removed]
        del self.graph.node[:]
        self.graph.node.extend(keep)
        used = {name for n in self.graph.node for name in n.input} | self.graph_outputs
        alive = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(alive)


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _set_ints(node: Any, name: str, values: list[int]) -> None:
    from onnx import helper

    for i, attr in enumerate(node.attribute):
        if attr.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, [int(v) for v in values]))


def fold_scale_into_conv(g: _Graph) -> int:
    """``Mul(x, c) -> Conv(W)`` with c per input channel -> ``Conv(W * c)``. Returns the count.

    c has shape (1, C, 1, 1), (C, 1, 1) or a broadcastable equivalent; the Mul's output must
    feed only the convolution's data input, and W must be a constant (an initializer or a
    Constant). Kernels the exporter left as Reshape/Transpose of a weight (large 1x1
    convolutions, past its folding size limit) are not folded: that would store a transposed,
    scaled copy of every such weight (+18 MB on EfficientNet-Lite0) for ~0.4 ms per image
    gradient (1.5%).
    """
    folded = 0
    for mul in list(g.graph.node):
        if mul.op_type != "Mul" or id(mul) in g.removed:
            continue
        conv = g.sole_consumer(mul.output[0])
        if conv is None or conv.op_type not in _CONVS or conv.input[0] != mul.output[0]:
            continue
        weight = g.value(conv.input[1])
        if weight is None:
            continue
        spatial = weight.ndim - 2
        for data_at, scale_at in ((0, 1), (1, 0)):
            scale = g.value(mul.input[scale_at])
            if scale is not None and g.value(mul.input[data_at]) is None:
                break
        else:
            continue
        channels = _per_channel(scale, spatial)
        if channels is None:
            continue
        group = int(_attr(conv, "group", 1))
        if conv.op_type == "Conv":
            out_ch, in_per_group = weight.shape[:2]
            if channels.size not in (1, in_per_group * group):
                continue
            full = np.broadcast_to(channels, (in_per_group * group,))
            # output channel m reads input channels of its group: g(m) * in_per_group + j
            index = (np.arange(out_ch) // (out_ch // group))[:, None] * in_per_group + np.arange(in_per_group)[None, :]
            scaled = weight * full[index].reshape(out_ch, in_per_group, *([1] * spatial))
        else:  # ConvTranspose: weight (C_in, C_out / group, *k), axis 0 is the input channel
            if channels.size not in (1, weight.shape[0]):
                continue
            full = np.broadcast_to(channels, (weight.shape[0],))
            scaled = weight * full.reshape(-1, *([1] * (spatial + 1)))
        conv.input[1] = g.add_initializer(scaled.astype(weight.dtype), conv.input[1].replace("/", "_"))
        g.rename_input(conv, mul.output[0], mul.input[data_at])
        g.removed.add(id(mul))
        folded += 1
    return folded


def _per_channel(scale: np.ndarray, spatial: int) -> np.ndarray | None:
    """(C,) when ``scale`` broadcasts over (N, C, *spatial) along the channel axis only."""
    if scale.ndim > spatial + 2:
        return None
    shape = (1,) * (spatial + 2 - scale.ndim) + scale.shape
    if shape[0] != 1 or any(d != 1 for d in shape[2:]):
        return None
    return scale.reshape(-1)


def fold_crop_into_conv(g: _Graph) -> int:
    """``Conv -> Pad(non-positive)`` -> Conv with smaller pads (ConvTranspose: larger). Returns the count.

    Only a constant-mode Pad (value 0) that crops spatial axes, on a convolution whose output
    nothing else reads, with explicit pads (auto_pad NOTSET) and, for ConvTranspose, no
    output_shape attribute.
    """
    folded = 0
    for pad in list(g.graph.node):
        if pad.op_type != "Pad" or id(pad) in g.removed:
            continue
        conv = g.producers.get(pad.input[0])
        if conv is None or conv.op_type not in _CONVS or g.sole_consumer(conv.output[0]) is not pad:
            continue
        if _attr(pad, "mode", b"constant") not in (b"constant", "constant"):
            continue
        pads = g.value(pad.input[1]) if len(pad.input) > 1 and pad.input[1] else None
        if pads is None or (len(pad.input) > 3 and pad.input[3]):  # no axes input
            continue
        if len(pad.input) > 2 and pad.input[2]:
            value = g.value(pad.input[2])
            if value is None or np.any(value != 0):
                continue
        rank = len(pads) // 2
        begin, end = [int(v) for v in pads[:rank]], [int(v) for v in pads[rank:]]
        if begin[:2] != [0, 0] or end[:2] != [0, 0] or any(v > 0 for v in begin + end):
            continue
        spatial = rank - 2
        if _attr(conv, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or _attr(conv, "output_shape") is not None:
            continue
        conv_pads = list(_attr(conv, "pads", [0] * (2 * spatial)))
        strides = list(_attr(conv, "strides", [1] * spatial))
        if conv.op_type == "Conv":
            # dropping c outputs at one end == starting (or stopping) c * stride inputs later
            new = [conv_pads[i] + begin[2 + i] * strides[i] for i in range(spatial)]
            new += [conv_pads[spatial + i] + end[2 + i] * strides[i] for i in range(spatial)]
            if any(v < 0 for v in new):
                continue
        else:
            new = [conv_pads[i] - begin[2 + i] for i in range(spatial)]
            new += [conv_pads[spatial + i] - end[2 + i] for i in range(spatial)]
        _set_ints(conv, "pads", new)
        conv.output[0] = pad.output[0]
        g.producers[pad.output[0]] = conv
        g.removed.add(id(pad))
        folded += 1
    return folded


def fold_backward_patterns(model: Any) -> dict[str, int]:
    """Apply the rewrites above to ``model`` in place; returns how many of each were folded."""
    g = _Graph(model)
    counts = {"crop_into_conv": fold_crop_into_conv(g), "scale_into_conv": fold_scale_into_conv(g)}
    g.finish()
    return counts
