"""Self-contained explainer graphs: one ONNX file per method, image in, saliency map out.

Each graph is assembled with the ``onnx`` helper API from the bundle's own graphs (forward,
grad_features, head, opticam_step): their nodes are copied in under a prefix and their
initializers keep pointing at the bundle's ``weights.bin``, so no weight is written twice.
The method arithmetic around them (targets, channel weights, bilinear upsampling as two
MatMuls, min-max with ``NORM_EPS``, Adam) is plain default-domain ONNX that mirrors
``opticam_rt/runtime/cams.py``, ``runtime/opticam.py`` and ``kernels/mask_numpy.py``.

Contract of every graph (the manifest's ``explainers`` entry repeats it):
    inputs:  image (N, 3, H, W) float32 in [0, 1]; target (N,) int64, -1 = top-1 class
             (default -1 for every image; a single value is broadcast to the batch).
    outputs: map (N, H, W) in [0, 1]; explained_target (N,) int64; score, masked_score (N,): the
             target's softmax probability on x and on x * map; logits (N, C).
    Opti-CAM adds inputs iterations (int64 scalar), lr, tol (float32 scalars, tol 0 = every
    step runs), patience (int64 scalar) and outputs loss (iterations, N; NaN once an image
    stopped) and steps (N,). Score-CAM and Ablation-CAM add chunk (int64 scalar): channels
    per loop iteration. Every extra input has its default stored as an initializer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from opticam_rt.constants import NORM_EPS
from opticam_rt.errors import ExportError
from opticam_rt.kernels.bilinear import bilinear_matrix

#: Method name -> graph name (file stem) of its explainer graph.
EXPLAINER_GRAPHS: dict[str, str] = {
    "opti-cam": "explain_opti_cam",
    "grad-cam": "explain_grad_cam",
    "grad-cam++": "explain_grad_cam_pp",
    "xgrad-cam": "explain_xgrad_cam",
    "layer-cam": "explain_layer_cam",
    "score-cam": "explain_score_cam",
    "ablation-cam": "explain_ablation_cam",
    "fake-cam": "explain_fake_cam",
}

#: Opti-CAM defaults: the paper's lr and iteration count; tol 0 runs every step; the host
#: loop's patience. Adam constants are torch.optim.Adam's.
OPTI_DEFAULTS = {"iterations": 100, "lr": 0.1, "tol": 0.0, "patience": 5}
ADAM = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
#: Channels per loop iteration (each costs N copies through the forward/head graph).
CHUNK_DEFAULTS = {"score-cam": 16, "ablation-cam": 64}

#: Outputs of every explainer graph. An ONNX graph cannot name an output like an input, so the
#: class explained (the input ``target`` with -1 resolved) is ``explained_target``.
COMMON_OUTPUTS = ("map", "explained_target", "score", "masked_score", "logits")


class _Names:
    """Unique value names across a graph and its Loop bodies (a body may not shadow outer names)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, hint: str) -> str:
        self.count += 1
        return f"x{self.count}_{hint}"


class _Builder:
    """Nodes and initializers of one graph being assembled (the main graph or a Loop body)."""

    def __init__(self, names: _Names) -> None:
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
                self.value_info.append(_renamed_value_info(value, rename[value.name], tag))
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


def _renamed_value_info(value: onnx.ValueInfoProto, name: str, tag: str) -> onnx.ValueInfoProto:
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


@dataclass(frozen=True)
class _Sizes:
    input_size: tuple[int, int]
    feature_size: tuple[int, int]
    channels: int
    num_classes: int


def _graph_input(name: str, elem: int, shape: Sequence[Any]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


class _ExplainerGraph:
    """The shared plumbing of one explainer graph: inputs, forward, target, map, masked score."""

    def __init__(self, bundle_graphs: dict[str, onnx.ModelProto], sizes: _Sizes) -> None:
        self.g = bundle_graphs
        self.s = sizes
        self.names = _Names()
        self.b = _Builder(self.names)
        self.inputs = [
            _graph_input("image", TensorProto.FLOAT, ["batch", 3, *sizes.input_size]),
            _graph_input("target", TensorProto.INT64, ["targets"]),
        ]
        self.defaults: dict[str, Any] = {"target": -1}
        self.b.initializers.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "target"))
        self.outputs: list[onnx.ValueInfoProto] = []
        #: Method-specific outputs: (name, value, element type, shape).
        self.extra_outputs: list[tuple[str, str, int, list[Any]]] = []

    def scalar_input(self, name: str, value: Any, dtype: Any) -> str:
        """A scalar graph input whose default (an initializer of the same name) is ``value``."""
        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.inputs.append(_graph_input(name, elem, []))
        self.b.initializers.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        self.defaults[name] = value
        return name

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

    def normalise(self, cam: str, builder: _Builder | None = None) -> str:
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

    def weighted_sum(self, weights: str, builder: _Builder | None = None) -> str:
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
            self.outputs.append(_graph_input(name, elem, shape))
        return self._model()

    def _model(self) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.b.nodes, "explainer", self.inputs, self.outputs, self.b.initializers, value_info=self.b.value_info
        )
        model = helper.make_model(graph, opset_imports=list(self.g["forward"].opset_import))
        model.ir_version = self.g["forward"].ir_version
        return model


def _gradient_cam(graph: _ExplainerGraph, method: str) -> str:
    """The Grad-CAM family's class map (N, h, w) before upsampling (see runtime/cams.py)."""
    b, a = graph.b, graph.features
    g = b.inline(graph.g["grad_features"], {"image": "image", "cotangent": graph.cotangent})["grad_features"]
    if method == "layer-cam":
        return b.op("Relu", [b.reduce("ReduceSum", b.op("Mul", [b.op("Relu", [g]), a]), [1], 0)])
    if method == "grad-cam":
        weights = b.reduce("ReduceMean", g, [2, 3], 0)
    elif method == "xgrad-cam":
        num = b.reduce("ReduceSum", b.op("Mul", [a, g]), [2, 3], 0)
        weights = b.op("Div", [num, b.op("Add", [b.reduce("ReduceSum", a, [2, 3], 0), b.const(1e-7)])])
    elif method == "grad-cam++":
        zero = b.const(0.0)
        g2 = b.op("Mul", [g, g])
        g3 = b.op("Mul", [g2, g])
        denom = b.op("Add", [b.op("Mul", [b.const(2.0), g2]), b.op("Mul", [b.reduce("ReduceSum", a, [2, 3], 1), g3])])
        safe = b.op("Where", [b.op("Not", [b.op("Equal", [denom, zero])]), denom, b.const(1.0)])
        alpha = b.op("Where", [b.op("Not", [b.op("Equal", [g, zero])]), b.op("Div", [g2, safe]), zero])
        weights = b.reduce("ReduceSum", b.op("Mul", [alpha, b.op("Relu", [g])]), [2, 3], 0)
    else:
        raise ExportError(f"no explainer graph for method {method!r}; methods: {', '.join(EXPLAINER_GRAPHS)}")
    return b.op("Relu", [graph.weighted_sum(weights)])


def _fake_cam(graph: _ExplainerGraph) -> str:
    """Ones with a zero at the top-left pixel, (N, H, W)."""
    b = graph.b
    h, w = graph.s.input_size
    pattern = np.ones((1, h, w), dtype=np.float32)
    pattern[0, 0, 0] = 0
    batch = b.op("Slice", [b.op("Shape", ["image"]), b.const([0], np.int64), b.const([1], np.int64)])
    shape = b.op("Concat", [batch, b.const([h, w], np.int64)], axis=0)
    return b.op("Expand", [b.const(pattern, hint="fake_cam"), shape])


def _opti_cam(graph: _ExplainerGraph) -> str:
    """Opti-CAM as a Loop around the fused step (runtime/opticam.py: loss 'mask', Adam, early stop)."""
    b = graph.b
    iterations = graph.scalar_input("iterations", OPTI_DEFAULTS["iterations"], np.int64)
    lr = graph.scalar_input("lr", OPTI_DEFAULTS["lr"], np.float32)
    tol = graph.scalar_input("tol", OPTI_DEFAULTS["tol"], np.float32)
    patience = graph.scalar_input("patience", OPTI_DEFAULTS["patience"], np.int64)
    nk = b.op("Slice", [b.op("Shape", [graph.features]), b.const([0], np.int64), b.const([2], np.int64)])
    n = b.op("Slice", [nk, b.const([0], np.int64), b.const([1], np.int64)])
    zeros_nk = b.op("ConstantOfShape", [nk], value=numpy_helper.from_array(np.zeros(1, np.float32)))
    zeros_n = b.op("ConstantOfShape", [n], value=numpy_helper.from_array(np.zeros(1, np.float32)))
    true_n = b.op("ConstantOfShape", [n], value=numpy_helper.from_array(np.ones(1, bool)))
    ones_n = b.op("ConstantOfShape", [n], value=numpy_helper.from_array(np.ones(1, np.float32)))
    true = b.const(True, bool)

    body, state = _adam_body(graph, lr, tol, patience)
    finals = b.op(
        "Loop",
        [iterations, true, zeros_nk, zeros_nk, zeros_nk, zeros_n, true_n, zeros_n, zeros_n, ones_n, ones_n],
        len(state) + 1,
        body=body,
    )
    u, steps, loss = finals[0], finals[3], finals[-1]
    # Scan outputs stop with the loop; pad loss to (iterations, N) with NaN like the host trace.
    ran = b.op("Slice", [b.op("Shape", [loss]), b.const([0], np.int64), b.const([1], np.int64)])
    missing = b.op("Sub", [b.unsqueeze(iterations, [0]), ran])
    pads = b.op("Concat", [b.const([0, 0], np.int64), missing, b.const([0], np.int64)], axis=0)
    loss = b.op("Pad", [loss, pads, b.const(np.nan)], mode="constant")
    graph.extra_outputs = [
        ("loss", loss, TensorProto.FLOAT, ["iterations", "batch"]),
        ("steps", b.op("Cast", [steps], to=TensorProto.INT64), TensorProto.INT64, ["batch"]),
    ]
    weights = b.op("Softmax", [u], axis=1)
    return graph.normalise(graph.weighted_sum(weights))


def _adam_body(graph: _ExplainerGraph, lr: str, tol: str, patience: str) -> tuple[onnx.GraphProto, list[str]]:
    """The Loop body: one fused Opti-CAM step for every image, Adam on the active rows only.

    State: u, m, v (N, K); t, active, quiet, previous, beta1^t, beta2^t (N,). Scan output: the
    loss (N,). The bias corrections use running products of the betas, as the host's Adam does:
    ONNX Runtime's float Pow differs from NumPy's in the last bit for some t (t = 4 for 0.9),
    which 100 steps amplified into maps that correlated only at r 0.92-0.97 with the host's.
    The step's weights are initializers of the body itself: ONNX Runtime does not constant-fold
    outer-scope values inside a body, which made the loop 1.12x slower than the host loop in a
    prototype (0.97x with the weights inside).
    """
    names = graph.names
    b = _Builder(names)
    i, cond_in = names("iter"), names("cond")
    state_in = [names(s) for s in ("u", "m", "v", "t", "active", "quiet", "previous", "beta1_t", "beta2_t")]
    u, m, v, t, active, quiet, previous, beta1_t, beta2_t = state_in
    step = b.inline(graph.g["opticam_step"], {"image": "image", "features": graph.features, "u": u, "cotangent": graph.cotangent})
    value = b.op("Neg", [step["score"]])  # loss "mask": maximise the target logit
    grad = b.op("Neg", [step["grad_u"]])
    beta1, beta2, eps = (np.float32(ADAM[k]) for k in ("beta1", "beta2", "eps"))
    f32 = lambda x: b.const(np.float32(x))  # noqa: E731
    # Same operation order as the host's Adam (runtime/opticam.py), so the first steps agree to
    # the last bit where the kernels do.
    act = b.unsqueeze(active, [1])
    t_next = b.op("Where", [active, b.op("Add", [t, f32(1)]), t])
    m_new = b.op("Add", [b.op("Mul", [f32(beta1), m]), b.op("Mul", [f32(1 - 0.9), grad])])
    v_new = b.op("Add", [b.op("Mul", [f32(beta2), v]), b.op("Mul", [b.op("Mul", [f32(1 - 0.999), grad]), grad])])
    beta1_t_next = b.op("Where", [active, b.op("Mul", [beta1_t, f32(beta1)]), beta1_t])
    beta2_t_next = b.op("Where", [active, b.op("Mul", [beta2_t, f32(beta2)]), beta2_t])
    m_hat = b.op("Div", [m_new, b.op("Sub", [f32(1), b.unsqueeze(beta1_t_next, [1])])])
    v_hat = b.op("Div", [v_new, b.op("Sub", [f32(1), b.unsqueeze(beta2_t_next, [1])])])
    update = b.op("Div", [b.op("Mul", [lr, m_hat]), b.op("Add", [b.op("Sqrt", [v_hat]), f32(eps)])])
    u_next = b.op("Where", [act, b.op("Sub", [u, update]), u])
    m_next = b.op("Where", [act, m_new, m])
    v_next = b.op("Where", [act, v_new, v])
    # Early stopping (host: change relative to the previous loss, `patience` quiet steps in a row).
    checking = b.op("And", [b.op("Greater", [tol, f32(0)]), b.op("Greater", [i, b.const(0, np.int64)])])
    change = b.op("Div", [b.op("Abs", [b.op("Sub", [value, previous])]), b.op("Max", [b.op("Abs", [previous]), f32(1e-12)])])
    counted = b.op("Where", [b.op("LessOrEqual", [change, tol]), b.op("Add", [quiet, f32(1)]), f32(0)])
    quiet_next = b.op("Where", [b.op("And", [active, checking]), counted, quiet])
    patience_f = b.op("Cast", [patience], to=TensorProto.FLOAT)
    keep = b.op("Or", [b.op("Not", [checking]), b.op("Less", [quiet_next, patience_f])])
    active_next = b.op("And", [active, keep])
    previous_next = b.op("Where", [active, value, previous])
    loss = b.op("Where", [active, value, f32(np.nan)])
    cond_out = b.op("Greater", [b.reduce("ReduceMax", b.op("Cast", [active_next], to=TensorProto.FLOAT), [0], 0), f32(0)])
    outs = [cond_out, u_next, m_next, v_next, t_next, active_next, quiet_next, previous_next, beta1_t_next, beta2_t_next, loss]
    out_names = [names("out") for _ in outs]
    for src, dst in zip(outs, out_names):
        b.op("Identity", [src], [dst])
    f, bl = TensorProto.FLOAT, TensorProto.BOOL
    kinds = [f, f, f, f, bl, f, f, f, f]
    ranks = [2, 2, 2, 1, 1, 1, 1, 1, 1]
    shape = lambda r: ["batch", "k"][:r] if r == 2 else ["batch"]  # noqa: E731
    inputs = [_graph_input(i, TensorProto.INT64, []), _graph_input(cond_in, bl, [])]
    inputs += [_graph_input(nm, kd, shape(r)) for nm, kd, r in zip(state_in, kinds, ranks)]
    outputs = [_graph_input(out_names[0], bl, [])]
    outputs += [_graph_input(nm, kd, shape(r)) for nm, kd, r in zip(out_names[1:-1], kinds, ranks)]
    outputs.append(_graph_input(out_names[-1], f, ["batch"]))
    body = helper.make_graph(b.nodes, "opticam_loop_body", inputs, outputs, b.initializers, value_info=b.value_info)
    return body, state_in


def _chunk_loop(graph: _ExplainerGraph, method: str) -> str:
    """Score-CAM / Ablation-CAM channel weights (N, K), ``chunk`` channels per Loop iteration.

    Score-CAM (runtime/cams.py ScoreCAM): channel k's normalised map masks the image; the
    target's softmax probability on each copy, then softmax over k. Ablation-CAM: the head graph
    on features with channel k zeroed; w_k = (y - y_k) / y. Channel indices past K (the last,
    partial chunk) are padding: a zero map for Score-CAM, no ablation for Ablation-CAM; their
    results are cut off after the loop.
    """
    b, names = graph.b, graph.names
    k = graph.s.channels
    chunk = graph.scalar_input("chunk", CHUNK_DEFAULTS[method], np.int64)
    one = b.const(1, np.int64)
    trips = b.op("Div", [b.op("Sub", [b.op("Add", [b.const(k, np.int64), chunk]), one]), chunk])
    padded = b.op("Mul", [trips, chunk])
    if method == "score-cam":
        extra = b.unsqueeze(b.op("Sub", [padded, b.const(k, np.int64)]), [0])
        pads = b.op("Concat", [b.const([0, 0, 0, 0, 0], np.int64), extra, b.const([0, 0], np.int64)], axis=0)
        source = b.op("Pad", [graph.features, pads], mode="constant")
    else:
        source = graph.features
    target_logit = b.pick(graph.logits, graph.index)

    body = _Builder(names)
    i, cond = names("iter"), names("cond")
    start = body.op("Mul", [i, chunk])
    if method == "score-cam":
        stop = body.op("Add", [start, chunk])
        axis = body.const([1], np.int64)
        channels = body.op("Slice", [source, body.unsqueeze(start, [0]), body.unsqueeze(stop, [0]), axis])
        maps = graph.normalise(channels, body)  # (N, c, H, W)
        copies = body.op("Mul", [body.unsqueeze("image", [1]), body.unsqueeze(maps, [2])])  # (N, c, 3, H, W)
        h, w = graph.s.input_size
        flat = body.op("Reshape", [copies, body.const([-1, 3, h, w], np.int64)])
        logits = body.inline(graph.g["forward"], {"image": flat})["logits"]
        table = body.op("Softmax", [logits], axis=1)
    else:
        idx = body.op("Range", [start, body.op("Add", [start, chunk]), body.const(1, np.int64)])  # (c,)
        zeroed = body.op("Equal", [body.unsqueeze(idx, [1]), body.const(np.arange(k)[None, :], np.int64)])  # (c, K)
        keep = body.op("Cast", [body.op("Not", [zeroed])], to=TensorProto.FLOAT)
        # (N, 1, K, h, w) * (1, c, K, 1, 1) -> (N, c, K, h, w): copy j has channel start + j zeroed.
        ablated = body.op("Mul", [body.unsqueeze(graph.features, [1]), body.unsqueeze(keep, [0, 3, 4])])
        fh, fw = graph.s.feature_size
        flat = body.op("Reshape", [ablated, body.const([-1, k, fh, fw], np.int64)])
        table = body.inline(graph.g["head"], {"features": flat})["logits"]
    # Row n*c + j is image n, channel start + j: pick each image's target.
    minus_one, classes = body.const([-1], np.int64), body.const([graph.s.num_classes], np.int64)
    shape = body.op("Concat", [minus_one, body.unsqueeze(chunk, [0]), classes], axis=0)
    per_image = body.op("Reshape", [table, shape])  # (N, c, C)
    n_c = body.op("Slice", [body.op("Shape", [per_image]), body.const([0], np.int64), body.const([2], np.int64)])
    index_shape = body.op("Concat", [n_c, body.const([1], np.int64)], axis=0)
    index = body.op("Expand", [body.unsqueeze(graph.index, [1, 2]), index_shape])  # (N, c, 1)
    picked = body.squeeze(body.op("GatherElements", [per_image, index], axis=2), [2])  # (N, c)
    cond_out, scan_out = names("cond_out"), names("scan_out")
    body.op("Identity", [cond], [cond_out])
    # Scan outputs are kept 1-D: ONNX Runtime stacks them on a new axis while the reference
    # evaluator vstacks (concatenates 2-D ones); both agree for 1-D values.
    body.op("Reshape", [picked, body.const([-1], np.int64)], [scan_out])
    body_graph = helper.make_graph(
        body.nodes,
        f"{method.replace('-', '_')}_loop_body",
        [_graph_input(i, TensorProto.INT64, []), _graph_input(cond, TensorProto.BOOL, [])],
        [_graph_input(cond_out, TensorProto.BOOL, []), _graph_input(scan_out, TensorProto.FLOAT, ["batch_x_chunk"])],
        body.initializers,
        value_info=body.value_info,
    )
    scanned = b.op("Loop", [trips, b.const(True, bool)], 1, body=body_graph)  # (trips, N * c)
    per_trip = b.op("Reshape", [scanned, b.op("Concat", [b.const([0, -1], np.int64), b.unsqueeze(chunk, [0])], axis=0)])
    results = b.op("Reshape", [b.op("Transpose", [per_trip], perm=[1, 0, 2]), b.const([0, -1], np.int64)])
    results = b.op("Slice", [results, b.const([0], np.int64), b.const([k], np.int64), b.const([1], np.int64)])
    if method == "score-cam":
        weights = b.op("Softmax", [results], axis=1)
    else:
        y = b.unsqueeze(target_logit, [1])
        weights = b.op("Div", [b.op("Sub", [y, results]), y])
    return b.op("Relu", [graph.weighted_sum(weights)])


def build_explainer_graph(method: str, bundle_graphs: dict[str, onnx.ModelProto], sizes: _Sizes) -> onnx.ModelProto:
    """The explainer graph of ``method`` (a key of ``EXPLAINER_GRAPHS``)."""
    graph = _ExplainerGraph(bundle_graphs, sizes)
    graph.prepare()
    if method == "opti-cam":
        saliency = _opti_cam(graph)
    elif method == "fake-cam":
        saliency = _fake_cam(graph)
    elif method in ("score-cam", "ablation-cam"):
        saliency = graph.normalise(_chunk_loop(graph, method))
    else:
        saliency = graph.normalise(_gradient_cam(graph, method))
    return graph.finish(saliency)


def describe(method: str, file: str, sizes: _Sizes) -> dict[str, Any]:
    """The manifest entry of one explainer graph: file, inputs, outputs, defaults, parameters."""
    h, w = sizes.input_size
    inputs: dict[str, Any] = {
        "image": {"dtype": "float32", "shape": ["N", 3, h, w], "doc": "pixels in [0, 1]"},
        "target": {"dtype": "int64", "shape": ["N"], "default": -1, "doc": "class to explain, -1 = top-1"},
    }
    outputs: dict[str, Any] = {
        "map": {"dtype": "float32", "shape": ["N", h, w]},
        "explained_target": {"dtype": "int64", "shape": ["N"], "doc": "the class explained"},
        "score": {"dtype": "float32", "shape": ["N"], "doc": "softmax probability of target on image"},
        "masked_score": {"dtype": "float32", "shape": ["N"], "doc": "softmax probability of target on image * map"},
        "logits": {"dtype": "float32", "shape": ["N", sizes.num_classes]},
    }
    parameters: dict[str, Any] = {}
    if method == "opti-cam":
        inputs["iterations"] = {"dtype": "int64", "shape": [], "default": OPTI_DEFAULTS["iterations"]}
        inputs["lr"] = {"dtype": "float32", "shape": [], "default": OPTI_DEFAULTS["lr"]}
        inputs["tol"] = {"dtype": "float32", "shape": [], "default": OPTI_DEFAULTS["tol"], "doc": "0 = run every step"}
        inputs["patience"] = {"dtype": "int64", "shape": [], "default": OPTI_DEFAULTS["patience"]}
        outputs["loss"] = {"dtype": "float32", "shape": ["iterations", "N"], "doc": "NaN after an image stopped"}
        outputs["steps"] = {"dtype": "int64", "shape": ["N"]}
        parameters = {"loss": "mask", "optimizer": "adam", **ADAM, "u_init": 0.0}
    elif method in CHUNK_DEFAULTS:
        inputs["chunk"] = {"dtype": "int64", "shape": [], "default": CHUNK_DEFAULTS[method], "doc": "channels per loop iteration"}
    parameters["norm_eps"] = NORM_EPS
    return {
        "file": file,
        "inputs": inputs,
        "outputs": outputs,
        "defaults": {name: spec["default"] for name, spec in inputs.items() if "default" in spec},
        "parameters": parameters,
    }


def build_explainer_graphs(
    bundle_graphs: dict[str, onnx.ModelProto],
    input_size: tuple[int, int],
    tap_shape: tuple[int, int, int],
    num_classes: int,
    methods: Sequence[str] | None = None,
) -> tuple[dict[str, onnx.ModelProto], dict[str, dict[str, Any]]]:
    """Every explainer graph from the bundle's graphs (their weights already external).

    Returns:
        (graph name -> model, method -> manifest entry).
    """
    sizes = _Sizes(tuple(input_size), (tap_shape[1], tap_shape[2]), tap_shape[0], num_classes)  # type: ignore[arg-type]
    models, entries = {}, {}
    for method in methods or EXPLAINER_GRAPHS:
        if method not in EXPLAINER_GRAPHS:
            raise ExportError(f"no explainer graph for method {method!r}; methods: {', '.join(EXPLAINER_GRAPHS)}")
        name = EXPLAINER_GRAPHS[method]
        models[name] = build_explainer_graph(method, bundle_graphs, sizes)
        entries[method] = describe(method, f"{name}.onnx", sizes)
    return models, entries


def add_explainer_graphs(directory: str | Path) -> "Bundle":  # noqa: F821
    """Write the explainer graphs into an existing bundle (exported without them) and update its manifest."""
    from opticam_rt.bundle import load_bundle, write_manifest

    bundle = load_bundle(directory)
    m = bundle.manifest
    graphs = {name: onnx.load(str(bundle.graph_path(name)), load_external_data=False) for name in m.graphs}
    models, entries = build_explainer_graphs(graphs, m.input_size, m.tap_shape, m.num_classes)
    for name, model in models.items():
        onnx.save(model, str(bundle.path / f"{name}.onnx"))
    m.explainers = entries
    write_manifest(bundle.path, m)
    return load_bundle(bundle.path)
