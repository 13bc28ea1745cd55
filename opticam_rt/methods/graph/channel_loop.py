"""The Loop over channels, ``chunk`` at a time, that Score-CAM and Ablation-CAM graphs share.

The method gives the loop body's table (one row of class scores per image and channel of the
chunk) and what becomes of the (N, K) results; the loop handles the chunking, the padding of the
last chunk and picking each image's target out of the table.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import helper, TensorProto

from opticam_rt.methods.graph.builder import Builder
from opticam_rt.methods.graph.explainer_graph import ExplainerGraph, graph_input

#: body builder, graph, the chunk's first channel, chunk -> table (N * chunk, C), row n * chunk + j
#: being image n with channel start + j treated.
ChunkTable = Callable[[Builder, ExplainerGraph, str, str], str]


def chunk_size(graph: ExplainerGraph) -> str:
    """The ``chunk`` option input, clamped to 1..K whatever a direct caller feeds (0 divided by
    zero, a negative ran no trip)."""
    b, k = graph.b, graph.s.channels
    chunk_in = graph.option("chunk")
    return b.op("Min", [b.op("Max", [chunk_in, b.const(1, np.int64)]), b.const(k, np.int64)])


def loop_over_channels(graph: ExplainerGraph, chunk: str, table: ChunkTable, hint: str) -> str:
    """Run ``table`` on every chunk of channels; -> the target's entry per image and channel (N, K).

    Channel indices past K (the last, partial chunk) are padding; their results are cut off.
    """
    b, names = graph.b, graph.names
    k = graph.s.channels
    one = b.const(1, np.int64)
    trips = b.op("Div", [b.op("Sub", [b.op("Add", [b.const(k, np.int64), chunk]), one]), chunk])

    body = Builder(names)
    i, cond = names("iter"), names("cond")
    start = body.op("Mul", [i, chunk])
    rows = table(body, graph, start, chunk)
    # Row n*c + j is image n, channel start + j: pick each image's target.
    minus_one, classes = body.const([-1], np.int64), body.const([graph.s.num_classes], np.int64)
    shape = body.op("Concat", [minus_one, body.unsqueeze(chunk, [0]), classes], axis=0)
    per_image = body.op("Reshape", [rows, shape])  # (N, c, C)
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
        f"{hint}_loop_body",
        [graph_input(i, TensorProto.INT64, []), graph_input(cond, TensorProto.BOOL, [])],
        [graph_input(cond_out, TensorProto.BOOL, []), graph_input(scan_out, TensorProto.FLOAT, ["batch_x_chunk"])],
        body.initializers,
        value_info=body.value_info,
    )
    scanned = b.op("Loop", [trips, b.const(True, bool)], 1, body=body_graph)  # (trips, N * c)
    per_trip = b.op("Reshape", [scanned, b.op("Concat", [b.const([0, -1], np.int64), b.unsqueeze(chunk, [0])], axis=0)])
    results = b.op("Reshape", [b.op("Transpose", [per_trip], perm=[1, 0, 2]), b.const([0, -1], np.int64)])
    return b.op("Slice", [results, b.const([0], np.int64), b.const([k], np.int64), b.const([1], np.int64)])


def padded_channels(graph: ExplainerGraph, chunk: str) -> str:
    """The features (N, K', h, w) with zero channels appended up to a whole number of chunks."""
    b, k = graph.b, graph.s.channels
    one = b.const(1, np.int64)
    trips = b.op("Div", [b.op("Sub", [b.op("Add", [b.const(k, np.int64), chunk]), one]), chunk])
    extra = b.unsqueeze(b.op("Sub", [b.op("Mul", [trips, chunk]), b.const(k, np.int64)]), [0])
    pads = b.op("Concat", [b.const([0, 0, 0, 0, 0], np.int64), extra, b.const([0, 0], np.int64)], axis=0)
    return b.op("Pad", [graph.features, pads], mode="constant")
