"""The Fake-CAM baseline's explainer graph: a constant map that proves faithfulness metrics can be gamed."""

from __future__ import annotations

import numpy as np

from opticam_rt.export.explainer_graphs.common import ExplainerGraph


def fake_cam(graph: ExplainerGraph) -> str:
    """Ones with a zero at the top-left pixel, (N, H, W)."""
    b = graph.b
    h, w = graph.s.input_size
    pattern = np.ones((1, h, w), dtype=np.float32)
    pattern[0, 0, 0] = 0
    batch = b.op("Slice", [b.op("Shape", ["image"]), b.const([0], np.int64), b.const([1], np.int64)])
    shape = b.op("Concat", [batch, b.const([h, w], np.int64)], axis=0)
    return b.op("Expand", [b.const(pattern, hint="fake_cam"), shape])
