"""The explainer graphs on EfficientNet-Lite0 and real photos against the host pipeline (issue 11's
acceptance): Grad-CAM family maps to 1e-5; Opti-CAM's trace, maps (by correlation) and AD/AI/AG.

Opti-CAM runs 20 steps by default like test_rt_opticam_e2e.py (OPTICAM_RT_E2E_ITERS=100 for the
paper's setting).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from opticam_rt.evaluation import classification_metrics

pytestmark = pytest.mark.slow

ITERATIONS = int(os.environ.get("OPTICAM_RT_E2E_ITERS", "20"))
#: Grad-CAM family maps, graph vs host (issue 11: 1e-5).
MAP_ATOL = 1e-5


@pytest.fixture(scope="module")
def graph(effnet):
    from opticam_rt.runtime.embedded import GraphExplainer

    return GraphExplainer(effnet, threads=1)


@pytest.mark.parametrize("method", ["grad-cam", "grad-cam++", "xgrad-cam", "layer-cam", "fake-cam"])
def test_gradient_family_equals_host(method, graph, effnet_ort, effnet_images) -> None:
    out = graph.run(effnet_images, method)
    host = effnet_ort.explain(effnet_images, method)
    np.testing.assert_array_equal(out.target, host.targets)
    np.testing.assert_allclose(out.map, host.maps, rtol=0, atol=MAP_ATOL)
    np.testing.assert_allclose(out.masked_score, host.masked_scores, rtol=0, atol=MAP_ATOL)


def test_opticam_graph_against_host_loop(graph, effnet_ort, effnet_images, tol, check) -> None:
    out = graph.run(effnet_images, "opti-cam", iterations=ITERATIONS)
    host = effnet_ort.explain(effnet_images, "opti-cam", iterations=ITERATIONS)
    check.assert_valid_maps(out.map, len(effnet_images), (224, 224))
    np.testing.assert_array_equal(out.target, host.targets)
    # Step 0 evaluates u = 0 in both: tight.
    assert check.relative_error(out.loss[0], host.trace[:, 0]) <= tol.STEP_RTOL
    corr = check.correlations(out.map, host.maps)
    assert corr.min() >= tol.LOOP_MAP_CORR, corr  # issue 11 asked for mean >= 0.95, min >= 0.85
    np.testing.assert_allclose(out.loss.T, host.trace, rtol=tol.LOOP_TRACE_RTOL)
    ours = classification_metrics(out.score, out.masked_score)
    theirs = classification_metrics(host.scores, host.masked_scores)
    for key in ("AD", "AI", "AG"):
        assert abs(ours[key] - theirs[key]) <= tol.OPTI_E2E_METRIC_POINTS, f"{key}: {ours} vs {theirs}"
