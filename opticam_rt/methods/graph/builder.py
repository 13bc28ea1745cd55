"""Assembling ONNX graphs by hand: unique names, nodes, de-duplicated initializers, inlined graphs."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from opticam_rt.errors import ExportError


class Names:
    """Unique value names across a graph and its Loop bodies (a body may not shadow outer names)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, hint: str) -> str:
        self.count += 1
        return f"x{self.count}_{hint}"


class Builder:
    """Nodes and initializers of one graph being assembled (the main graph or a Loop body)."""

    def __init__(self, names: Names) -> None:
        self.names = names
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        #: Shapes of inlined values, so ONNX Runtime fuses an inlined graph inside a Loop body as
        #: it fuses the graph alone (without them it could not prove a residual Add's operands
        #: equal in shape and left 9 of EfficientNet's Conv+Add fusions undone in the body).
        self.value_info: list[onnx.ValueInfoProto] = []
        self._by_content: dict[bytes, str] = {}

    def op(self, op_type: str, inputs: Sequence[str], outputs: int | Sequence[str] = 1, **attrs: Any) -> Any:
        """Add a node; returns its output name (one output) or the list of names."""
        names = [self.names(op_type.lower()) for _ in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=self.names(op_type), **attrs))
        return names[0] if len(names) == 1 else names

    def const(self, value: Any, dtype: Any = np.float32, hint: str = "c") -> str:
        return self.tensor(numpy_helper.from_array(np.asarray(value, dtype=dtype)), hint)

    def tensor(self, tensor: onnx.TensorProto, hint: str = "c") -> str:
        """Add an initializer, once per distinct content (external-data references included)."""
        probe = onnx.TensorProto()
        probe.CopyFrom(tensor)
        probe.name = ""
        key = probe.SerializeToString()
        if key not in self._by_content:
            name = self.names(hint)
            probe.name = name
            self.initializers.append(probe)
            self._by_content[key] = name
        return self._by_content[key]

    def inline(self, model: onnx.ModelProto, feeds: dict[str, str]) -> dict[str, str]:
        """Copy ``model``'s graph in, its inputs wired to ``feeds``; -> its output name -> our name."""
        graph = model.graph
        rename = dict(feeds)
        tag = self.names(graph.name or "g")
        for init in graph.initializer:
            rename[init.name] = self.tensor(init, "w")
        for node in graph.node:
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
                raise ExportError(f"graph {graph.name!r}: node {node.name} has a subgraph; cannot inline it")
            for out in node.output:
                if out:
                    rename[out] = f"{tag}/{out}"
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = f"{tag}/{node.name}"
            copy.ClearField("input")
            copy.input.extend(rename[i] if i else "" for i in node.input)
            copy.ClearField("output")
            copy.output.extend(rename[o] if o else "" for o in node.output)
            self.nodes.append(copy)
        for value in graph.value_info:
            if value.name in rename and value.name not in feeds:
                self.value_info.append(renamed_value_info(value, rename[value.name], tag))
        return {o.name: rename[o.name] for o in graph.output}

    # --- small compositions ---------------------------------------------------------------

    def squeeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Squeeze", [x, self.const(list(axes), np.int64)])

    def unsqueeze(self, x: str, axes: Sequence[int]) -> str:
        return self.op("Unsqueeze", [x, self.const(list(axes), np.int64)])

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: int) -> str:
        return self.op(op_type, [x, self.const(list(axes), np.int64)], keepdims=keepdims)

    def pick(self, table: str, index: str) -> str:
        """table (N, C), index (N,) int64 -> (N,) table[n, index[n]] (fails when out of range)."""
        return self.squeeze(self.op("GatherElements", [table, self.unsqueeze(index, [1])], axis=1), [1])


def renamed_value_info(value: onnx.ValueInfoProto, name: str, tag: str) -> onnx.ValueInfoProto:
    """``value`` under ``name``, its symbolic dimensions made local to one inlined copy.

    The same symbol (``batch``) means N in one inlined graph and N * chunk in another (Score-CAM's
    body), so symbols are prefixed with the copy's tag: equal within a copy, unrelated across.
    """
    out = onnx.ValueInfoProto()
    out.CopyFrom(value)
    out.name = name
    if out.type.HasField("tensor_type") and out.type.tensor_type.HasField("shape"):
        for dim in out.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.dim_param = f"{tag}/{dim.dim_param}"
    return out
