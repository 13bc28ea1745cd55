"""The CAM family on every graph-running CPU backend (``ort-cpu``, ``ov-cpu``: the ``tiny_rt`` and
``effnet_rt`` fixtures) against the independent PyTorch reference (``torch``).

EfficientNet-Lite0 on real photos for every method. Score-CAM and Ablation-CAM cost 1280 full
forwards per image in the reference (~45 s per photo on 2 cores), so on EfficientNet they run
on one photo; the tiny net (K = 8) covers them on a batch with explicit targets.
"""

from __future__ import annotations

import numpy as np
import pytest

from opticam_rt.runtime import METHOD_NAMES

#: Opti-CAM and Extremal Perturbation have their own suites (test_rt_opticam_*,
#: test_rt_extremal_perturbation): their hundreds of optimiser steps amplify rounding; so does
#: the Conceptor-CAM wrapper over Opti-CAM (tests/runtime/test_rt_conceptor.py).
ALL_METHODS = tuple(m for m in METHOD_NAMES if not m.endswith("opti-cam") and m != "extremal-perturbation")
#: A full network pass per feature channel (1280 on EfficientNet-Lite0): one photo there.
PERTURBATION_METHODS = ("score-cam", "ablation-cam")
GRADIENT_METHODS = tuple(m for m in ALL_METHODS if m not in PERTURBATION_METHODS)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_tiny_parity_every_method(method, tiny_rt, tiny_torch, tiny_images, tol, check):
    a = tiny_rt.explain(tiny_images, method=method)
    b = tiny_torch.explain(tiny_images, method=method)
    check.assert_valid_maps(a.maps, len(tiny_images), (32, 32))
    np.testing.assert_array_equal(a.targets, b.targets)
    err = np.abs(a.maps - b.maps).max()
    assert err <= tol.TINY_MAP_ATOL, f"{method}: max |ort - torch| = {err:.2e}"
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.masked_scores, b.masked_scores, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", PERTURBATION_METHODS)
def test_tiny_parity_explicit_non_top1_targets(method, tiny_rt, tiny_torch, tiny_images, tol):
    """The per-image loops index the target of each image, not the first one."""
    targets = np.array([0, 3, 6, 1])
    a = tiny_rt.explain(tiny_images, method=method, targets=targets)
    b = tiny_torch.explain(tiny_images, method=method, targets=targets)
    np.testing.assert_array_equal(a.targets, targets)
    assert np.abs(a.maps - b.maps).max() <= tol.TINY_MAP_ATOL
    top1 = tiny_rt.explain(tiny_images, method=method)
    # Score-CAM's softmax over probabilities in [0, 1] makes its weights nearly uniform, so maps
    # of different classes differ little (~1e-3 here), still far above the parity tolerance.
    diff = np.abs(top1.maps - a.maps).max()
    assert diff > 10 * tol.TINY_MAP_ATOL, f"explicit targets gave the top-1 maps ({diff:.1e})"


@pytest.mark.slow
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_effnet_parity_gradient_methods(method, effnet_rt, effnet_torch, effnet_images, tol, check):
    a = effnet_rt.explain(effnet_images, method=method)
    b = effnet_torch.explain(effnet_images, method=method)
    check.assert_valid_maps(a.maps, len(effnet_images), (224, 224))
    np.testing.assert_array_equal(a.targets, b.targets)
    corr = check.correlations(a.maps, b.maps)
    assert (corr >= tol.MAP_CORR_MIN).all(), f"{method}: per-image correlation {corr}"
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-3, atol=1e-5)


@pytest.fixture(scope="module")
def effnet_torch_one_photo(effnet_torch, effnet_images):
    """``get(method)``: the PyTorch reference's explanation of the first photo, computed once per
    method and shared by every backend's test (the reference does not depend on the backend)."""
    done: dict = {}

    def get(method: str):
        if method not in done:
            done[method] = effnet_torch.explain(effnet_images[:1], method=method)
        return done[method]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("method", PERTURBATION_METHODS)
def test_effnet_parity_perturbation_methods(method, effnet_rt, effnet_torch_one_photo, effnet_images, tol, check):
    """One photo: 1280 masked (Score-CAM) or ablated (Ablation-CAM) passes on each side."""
    a = effnet_rt.explain(effnet_images[:1], method=method)
    b = effnet_torch_one_photo(method)
    check.assert_valid_maps(a.maps, 1, (224, 224))
    np.testing.assert_array_equal(a.targets, b.targets)
    corr = check.correlations(a.maps, b.maps)
    assert (corr >= tol.MAP_CORR_MIN).all(), f"{method}: correlation {corr}"
    # A fair explanation keeps some of the evidence: better than a black image's ~uniform 1/1000.
    assert a.masked_scores[0] > 0.01, a.masked_scores
