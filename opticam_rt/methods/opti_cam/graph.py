"""Opti-CAM's explainer graph: a Loop around the fused step with Adam and early stopping."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from opticam_rt.constants import LR_RANGE, MAX_ITERATIONS
from opticam_rt.method_defaults import ADAM
from opticam_rt.methods.graph.builder import Builder
from opticam_rt.methods.graph.explainer_graph import ExplainerGraph, graph_input


def opti_cam_graph(graph: ExplainerGraph) -> str:
    """Opti-CAM as a Loop around the fused step (``host.py``: loss 'mask', Adam, early stop)."""
    b = graph.b
    # A direct caller's values are clamped here, as the host options would refuse them: without
    # it lr=-1 ascended, lr=NaN gave a NaN map, patience<=0 was taken and 2**40 steps ran on.
    iterations = clamp(b, graph.option("iterations"), 1, MAX_ITERATIONS)
    lr_in = graph.option("lr")
    lr_default = np.float32(graph.option_inputs["lr"][0])
    lr = b.op("Where", [b.op("IsNaN", [lr_in]), b.const(lr_default), clamp(b, lr_in, *LR_RANGE)])
    tol_in = graph.option("tol")
    tol = b.op("Where", [b.op("IsNaN", [tol_in]), b.const(np.float32(0)), tol_in])  # NaN: no early stop
    patience = clamp(b, graph.option("patience"), 1, MAX_ITERATIONS)
    nk = b.op("Slice", [b.op("Shape", [graph.features]), b.const([0], np.int64), b.const([2], np.int64)])
    n = b.op("Slice", [nk, b.const([0], np.int64), b.const([1], np.int64)])
    zeros_nk = b.op("ConstantOfShape", [nk], value=numpy_helper.from_array(np.zeros(1, np.float32)))
    zeros_n = b.op("ConstantOfShape", [n], value=numpy_helper.from_array(np.zeros(1, np.float32)))
    true_n = b.op("ConstantOfShape", [n], value=numpy_helper.from_array(np.ones(1, bool)))
    ones_n = b.op("ConstantOfShape", [n], value=numpy_helper.from_array(np.ones(1, np.float32)))
    true = b.const(True, bool)

    body, state = adam_body(graph, lr, tol, patience)
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


def clamp(b: Builder, value: str, low: float, high: float) -> str:
    """``value`` (a scalar of the graph) limited to [low, high], in its own dtype."""
    dtype = np.int64 if isinstance(low, int) and isinstance(high, int) else np.float32
    return b.op("Min", [b.op("Max", [value, b.const(low, dtype)]), b.const(high, dtype)])


def adam_body(graph: ExplainerGraph, lr: str, tol: str, patience: str) -> tuple[onnx.GraphProto, list[str]]:
    """The Loop body: one fused Opti-CAM step for every image, Adam on the active rows only.

    State: u, m, v (N, K); t, active, quiet, previous, beta1^t, beta2^t (N,). Scan output: the
    loss (N,). The bias corrections use running products of the betas, as the host's Adam does (``host.Adam``):
    ONNX Runtime's float Pow differs from NumPy's in the last bit for some t (t = 4 for 0.9),
    which 100 steps amplified into maps that correlated only at r 0.92-0.97 with the host's.
    The step's weights are initializers of the body itself: ONNX Runtime does not constant-fold
    outer-scope values inside a body, which made the loop 1.12x slower than the host loop in a
    prototype (0.97x with the weights inside).
    """
    names = graph.names
    b = Builder(names)
    i, cond_in = names("iter"), names("cond")
    state_in = [names(s) for s in ("u", "m", "v", "t", "active", "quiet", "previous", "beta1_t", "beta2_t")]
    u, m, v, t, active, quiet, previous, beta1_t, beta2_t = state_in
    step = b.inline(graph.g["opticam_step"], {"image": "image", "features": graph.features, "u": u, "cotangent": graph.cotangent})
    value = b.op("Neg", [step["score"]])  # loss "mask": maximise the target logit
    grad = b.op("Neg", [step["grad_u"]])
    beta1, beta2, eps = (np.float32(ADAM[k]) for k in ("beta1", "beta2", "eps"))
    f32 = lambda x: b.const(np.float32(x))  # noqa: E731
    # Same operation order as the host's Adam (``host.Adam``), so the first steps agree to
    # the last bit where the kernels do.
    act = b.unsqueeze(active, [1])
    t_next = b.op("Where", [active, b.op("Add", [t, f32(1)]), t])
    m_new = b.op("Add", [b.op("Mul", [f32(beta1), m]), b.op("Mul", [f32(1 - ADAM["beta1"]), grad])])
    v_new = b.op("Add", [b.op("Mul", [f32(beta2), v]), b.op("Mul", [b.op("Mul", [f32(1 - ADAM["beta2"]), grad]), grad])])
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
    inputs = [graph_input(i, TensorProto.INT64, []), graph_input(cond_in, bl, [])]
    inputs += [graph_input(nm, kd, shape(r)) for nm, kd, r in zip(state_in, kinds, ranks)]
    outputs = [graph_input(out_names[0], bl, [])]
    outputs += [graph_input(nm, kd, shape(r)) for nm, kd, r in zip(out_names[1:-1], kinds, ranks)]
    outputs.append(graph_input(out_names[-1], f, ["batch"]))
    body = helper.make_graph(b.nodes, "opticam_loop_body", inputs, outputs, b.initializers, value_info=b.value_info)
    return body, state_in
