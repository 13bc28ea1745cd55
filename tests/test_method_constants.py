"""The constants every implementation shares, each held to an independent computation.

A planted change in Adam's epsilon, the normalisation epsilon or a chunk default must fail here:
the implementations read one copy, so parity between them cannot see such a change.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_host_adam_steps_as_torch_optim_adam_where_epsilon_matters():
    from opticam_rt.methods.opti_cam import Adam

    rng = np.random.default_rng(0)
    u0 = rng.normal(size=(3, 5)).astype(np.float32)
    # gradients ~1e-9: sqrt(v_hat) ~ |g| is below eps = 1e-8, so eps sets the step size
    grads = [(rng.normal(size=(3, 5)) * 1e-9).astype(np.float32) for _ in range(6)]
    ours = u0.copy()
    adam = Adam(lr=0.1)
    adam.init(ours.shape)
    param = torch.tensor(u0.astype(np.float64), requires_grad=True)
    theirs = torch.optim.Adam([param], lr=0.1)  # torch's own defaults: betas (0.9, 0.999), eps 1e-8
    for g in grads:
        adam.step(ours, g, np.arange(3))
        param.grad = torch.tensor(g.astype(np.float64))
        theirs.step()
    moved = np.abs(param.detach().numpy() - u0).max()
    assert moved > 1e-3  # the steps are large enough to tell eps 1e-8 from 1e-6 (which moves ~100x less)
    np.testing.assert_allclose(ours, param.detach().numpy(), rtol=0, atol=moved * 1e-4)


def test_min_max_normalisation_epsilon():
    """A map whose range (1e-7) is near the epsilon: its peak normalises to 1e-7 / (1e-7 + 1e-8)."""
    from opticam_rt.methods.cam_family import class_map_to_saliency

    cam = np.zeros((1, 2, 2), dtype=np.float32)
    cam[0, 0, 1] = 1e-7
    images = np.zeros((1, 3, 8, 8), dtype=np.float32)
    ours = class_map_to_saliency(cam, images)
    up = torch.nn.functional.interpolate(torch.tensor(cam[:, None], dtype=torch.float64), size=(8, 8),
                                         mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
    expected = ((up - lo) / (hi - lo + 1e-8)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6)
    assert ours.max() == pytest.approx(1e-7 / 1.1e-7, rel=1e-4)


@pytest.mark.parametrize("method", ["score-cam", "ablation-cam"])
def test_every_implementation_has_the_same_chunk_default(method):
    from opticam_rt.export.explainer_graphs import describe
    from opticam_rt.methods import REGISTRY
    from opticam_rt.methods.graph.explainer_graph import Sizes

    host = REGISTRY[method].Options().chunk
    graph = describe(method, "x.onnx", Sizes((8, 8), (2, 2), 4, 3))["defaults"]["chunk"]
    reference = inspect.signature(REGISTRY[method].reference).parameters["chunk"].default
    assert host == graph == reference
    assert host == {"score-cam": 16, "ablation-cam": 256}[method]  # the decision in docs/decisions.md


def test_opticam_graph_defaults_are_the_options_defaults():
    from opticam_rt.export.explainer_graphs import describe
    from opticam_rt.methods.graph.explainer_graph import Sizes
    from opticam_rt.methods.opti_cam import OptiCAMOptions

    entry = describe("opti-cam", "x.onnx", Sizes((8, 8), (2, 2), 4, 3))
    host = OptiCAMOptions()
    assert {k: entry["defaults"][k] for k in ("iterations", "lr", "patience")} == {
        "iterations": host.iterations, "lr": host.lr, "patience": host.patience}
    assert entry["parameters"]["eps"] == torch.optim.Adam([torch.zeros(1, requires_grad=True)]).defaults["eps"]
