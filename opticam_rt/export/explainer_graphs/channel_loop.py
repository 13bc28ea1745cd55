"""Explainer graphs that loop over channels, ``chunk`` at a time: Score-CAM (one masked forward per
channel) and Ablation-CAM (one head pass per zeroed channel)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from opticam_rt.export.explainer_graphs.builder import Builder
from opticam_rt.export.explainer_graphs.common import ExplainerGraph, graph_input
from opticam_rt.method_defaults import CHUNK

#: Channels per loop iteration (each costs N copies through the forward/head graph): the methods' own.
CHUNK_DEFAULTS = CHUNK


def channel_weights(graph: ExplainerGraph, method: str) -> str:
    """Score-CAM / Ablation-CAM channel weights (N, K), ``chunk`` channels per Loop iteration.

    Score-CAM (runtime/cams.py ScoreCAM): channel k's normalised map masks the image; the
    target's softmax probability on each copy, then softmax over k. Ablation-CAM: the head graph
    on features with channel k zeroed; w_k = (y - y_k) / y. Channel indices past K (the last,
    partial chunk) are padding: a zero map for Score-CAM, no ablation for Ablation-CAM; their
    results are cut off after the loop.
    """
    b, names = graph.b, graph.names
    k = graph.s.channels
    # 1..K whatever a direct caller feeds (0 divided by zero, a negative ran no trip)
    chunk_in = graph.scalar_input("chunk", CHUNK_DEFAULTS[method], np.int64)
    chunk = b.op("Min", [b.op("Max", [chunk_in, b.const(1, np.int64)]), b.const(k, np.int64)])
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

    body = Builder(names)
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
        [graph_input(i, TensorProto.INT64, []), graph_input(cond, TensorProto.BOOL, [])],
        [graph_input(cond_out, TensorProto.BOOL, []), graph_input(scan_out, TensorProto.FLOAT, ["batch_x_chunk"])],
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
