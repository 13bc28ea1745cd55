"""The plumbing every explainer graph shares: its inputs, the forward pass, the explained class, the
upsample-normalise of a class map and the masked score (the common outputs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from opticam_rt.constants import NORM_EPS
from opticam_rt.kernels.bilinear import bilinear_matrix
from opticam_rt.methods.graph.builder import Builder, Names
from opticam_rt.methods.record import GRAPH_OUTPUTS as COMMON_OUTPUTS

#: The outputs of every explainer graph (``record.GRAPH_OUTPUTS``).
__all__ = ["COMMON_OUTPUTS", "ExplainerGraph", "Sizes", "graph_input"]


@dataclass(frozen=True)
class Sizes:
    input_size: tuple[int, int]
    feature_size: tuple[int, int]
    channels: int
    num_classes: int


def graph_input(name: str, elem: int, shape: Sequence[Any]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


class ExplainerGraph:
    """The shared plumbing of one explainer graph: inputs, forward, target, map, masked score."""

    def __init__(
        self, bundle_graphs: dict[str, onnx.ModelProto], sizes: Sizes, options: dict[str, tuple[Any, Any]] | None = None
    ) -> None:
        """options: the method's option inputs, name -> (default, dtype) (``Method.graph_inputs``)."""
        self.g = bundle_graphs
        self.option_inputs = dict(options or {})
        self.s = sizes
        self.names = Names()
        self.b = Builder(self.names)
        self.inputs = [
            graph_input("image", TensorProto.FLOAT, ["batch", 3, *sizes.input_size]),
            graph_input("target", TensorProto.INT64, ["targets"]),
        ]
        self.defaults: dict[str, Any] = {"target": -1}
        self.b.initializers.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "target"))
        self.outputs: list[onnx.ValueInfoProto] = []
        #: Method-specific outputs: (name, value, element type, shape).
        self.extra_outputs: list[tuple[str, str, int, list[Any]]] = []

    def scalar_input(self, name: str, value: Any, dtype: Any) -> str:
        """A scalar graph input whose default (an initializer of the same name) is ``value``."""
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.inputs.append(graph_input(name, elem, []))
        self.b.initializers.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        self.defaults[name] = value
        return name

    def option(self, name: str) -> str:
        """The scalar input of the method's option ``name``, its default the option's own."""
        if name not in self.option_inputs:
            raise KeyError(f"{name!r} is not among the graph's option inputs {sorted(self.option_inputs)}")
        default, dtype = self.option_inputs[name]
        return self.scalar_input(name, default, dtype)

    def prepare(self) -> None:
        """Forward pass, the explained class and its one-hot cotangent."""
        b, c = self.b, self.s.num_classes
        out = b.inline(self.g["forward"], {"image": "image"})
        self.logits, self.features = out["logits"], out["features"]
        batch = b.op("Slice", [b.op("Shape", ["image"]), b.const([0], np.int64), b.const([1], np.int64)])
        requested = b.op("Expand", ["target", batch])
        top1 = b.op("ArgMax", [self.logits], axis=1, keepdims=0)
        target = b.op("Where", [b.op("Equal", [requested, b.const(-1, np.int64)]), top1, requested])
        # GatherElements accepts negative indices (counting from the end); shifting them out of
        # range makes a target < -1 fail inside the runtime as one >= C does.
        self.index = b.op(
            "Where", [b.op("Less", [target, b.const(0, np.int64)]), b.op("Sub", [target, b.const(c, np.int64)]), target]
        )
        self.score = b.pick(b.op("Softmax", [self.logits], axis=1), self.index)
        classes = b.const(np.arange(c)[None, :], np.int64, "classes")
        self.cotangent = b.op("Cast", [b.op("Equal", [b.unsqueeze(self.index, [1]), classes])], to=TensorProto.FLOAT)

    def target_gradients(self) -> str:
        """d logit_target / d A (N, K, h, w) by the bundle's grad_features graph (as ``MethodContext``)."""
        feeds = {"image": "image", "cotangent": self.cotangent}
        return self.b.inline(self.g["grad_features"], feeds)["grad_features"]

    def normalise(self, cam: str, builder: Builder | None = None) -> str:
        """cam (..., h, w) -> upsampled (bilinear, align_corners=False) and min-max normalised (..., H, W)."""
        b = builder or self.b
        (big_h, big_w), (h, w) = self.s.input_size, self.s.feature_size
        up_h = b.const(bilinear_matrix(big_h, h), hint="upsample_h")
        up_w_t = b.const(np.ascontiguousarray(bilinear_matrix(big_w, w).T), hint="upsample_w_t")
        up = b.op("MatMul", [up_h, b.op("MatMul", [cam, up_w_t])])
        lo = b.reduce("ReduceMin", up, [-2, -1], 1)
        hi = b.reduce("ReduceMax", up, [-2, -1], 1)
        denom = b.op("Add", [b.op("Sub", [hi, lo]), b.const(NORM_EPS)])
        return b.op("Div", [b.op("Sub", [up, lo]), denom])

    def weighted_sum(self, weights: str, builder: Builder | None = None) -> str:
        """weights (N, K), features (N, K, h, w) -> (N, h, w) = sum_k w_k A_k."""
        b = builder or self.b
        return b.reduce("ReduceSum", b.op("Mul", [b.unsqueeze(weights, [2, 3]), self.features]), [1], 0)

    def finish(self, saliency: str) -> onnx.ModelProto:
        """Masked score of the map, the common outputs, and the model."""
        b = self.b
        masked = b.op("Mul", ["image", b.unsqueeze(saliency, [1])])
        masked_logits = b.inline(self.g["forward"], {"image": masked})["logits"]
        masked_score = b.pick(b.op("Softmax", [masked_logits], axis=1), self.index)
        n = "batch"
        (big_h, big_w), c = self.s.input_size, self.s.num_classes
        finals = [
            ("map", saliency, TensorProto.FLOAT, [n, big_h, big_w]),
            ("explained_target", self.index, TensorProto.INT64, [n]),
            ("score", self.score, TensorProto.FLOAT, [n]),
            ("masked_score", masked_score, TensorProto.FLOAT, [n]),
            ("logits", self.logits, TensorProto.FLOAT, [n, c]),
        ]
        outputs = [*finals, *self.extra_outputs]
        for name, value, elem, shape in outputs:
            b.op("Identity", [value], [name])
            self.outputs.append(graph_input(name, elem, shape))
        return self._model()

    def _model(self) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.b.nodes, "explainer", self.inputs, self.outputs, self.b.initializers, value_info=self.b.value_info
        )
        model = helper.make_model(graph, opset_imports=list(self.g["forward"].opset_import))
        model.ir_version = self.g["forward"].ir_version
        return model
