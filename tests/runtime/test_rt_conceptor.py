"""Conceptor-CAM (methods/conceptor.py): the conceptor algebra against Jaeger's closed forms, the
pooling against the upsampling it is the adjoint of, and the host wrapper against its float64
PyTorch reference (the ``torch`` backend) on the tiny net."""

from __future__ import annotations

import numpy as np
import pytest

from opticam_rt.kernels.bilinear import bilinear_matrix
from opticam_rt.methods import REGISTRY
from opticam_rt.methods.conceptor import DELTA, conceptor, conceptor_and, pooled_to_features


def test_conceptor_of_a_diagonal_correlation_is_lambda_over_lambda_plus_aperture():
    """Jaeger eq. (7): for R with eigenvalues l (scaled here to mean 1), C's are l / (l + a^-2)."""
    lam = np.array([4.0, 2.0, 1.0, 1.0, 0.0])
    scaled = lam / lam.mean()
    for aperture in (0.5, 1.0, 10.0):
        c = conceptor(np.diag(lam), aperture)
        np.testing.assert_allclose(np.diag(c), scaled / (scaled + aperture**-2), rtol=1e-12)
        np.testing.assert_allclose(c, np.diag(np.diag(c)), atol=1e-15)
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))[0]  # basis-free: C(Q R Q^T) = Q C(R) Q^T
    np.testing.assert_allclose(conceptor(rot @ np.diag(lam) @ rot.T, 1.0), rot @ conceptor(np.diag(lam), 1.0) @ rot.T, atol=1e-12)


def test_and_of_commuting_conceptors_is_jaegers_elementwise_formula():
    """For diagonal C, B: (C AND B)_ii = c b / (c + b - c b) (Jaeger, sec. 3.9), on the regularised values."""
    c, b = np.array([0.9, 0.5, 0.2, 0.7]), np.array([0.8, 0.1, 0.6, 0.7])
    rc, rb = (1 - DELTA) * c + DELTA, (1 - DELTA) * b + DELTA
    got = np.diag(conceptor_and(np.diag(c), np.diag(b)))
    np.testing.assert_allclose(got, rc * rb / (rc + rb - rc * rb), rtol=1e-12)
    # AND keeps no more of a direction than either operand does
    assert (got <= np.minimum(rc, rb) + 1e-12).all()


def test_pooling_is_the_adjoint_of_the_upsampling_share():
    rng = np.random.default_rng(1)
    maps = rng.random((2, 20, 14))
    cells = rng.random((3, 5))
    uh, uw = bilinear_matrix(20, 3).astype(np.float64), bilinear_matrix(14, 5).astype(np.float64)
    pooled = pooled_to_features(maps, (3, 5))
    weight = uh.T @ np.ones((20, 14)) @ uw
    # <U x U^T, S> == <x, pooled * weight>
    np.testing.assert_allclose(np.sum(uh @ cells @ uw.T * maps[0]), np.sum(cells * pooled[0] * weight), rtol=1e-10)
    np.testing.assert_allclose(pooled_to_features(np.ones((1, 20, 14)), (3, 5)), 1.0, rtol=1e-12)


@pytest.mark.parametrize("method, options", [("conceptor-grad-cam", {}), ("conceptor-opti-cam", {"iterations": 3})])
def test_host_equals_the_float64_reference(method, options, tiny_rt, tiny_torch, tiny_images, check):
    a = tiny_rt.explain(tiny_images, method, **options)
    b = tiny_torch.explain(tiny_images, method, **options)
    check.assert_valid_maps(a.maps, len(tiny_images), (32, 32))
    np.testing.assert_array_equal(a.targets, b.targets)
    assert np.abs(a.maps - b.maps).max() < 2e-4, np.abs(a.maps - b.maps).max()


def test_the_wrapper_changes_the_base_map_and_its_options_act(tiny_ort, tiny_images):
    base = tiny_ort.explain(tiny_images, "grad-cam").maps
    wrapped = tiny_ort.explain(tiny_images, "conceptor-grad-cam").maps
    positive = tiny_ort.explain(tiny_images, "conceptor-grad-cam", combine="positive").maps
    wide = tiny_ort.explain(tiny_images, "conceptor-grad-cam", aperture=100.0).maps
    for other in (wrapped, positive, wide):
        assert np.abs(other - base).max() > 1e-2
    assert np.abs(wrapped - positive).max() > 1e-3 and np.abs(wrapped - wide).max() > 1e-3
    assert REGISTRY["conceptor-grad-cam"].graph is None and REGISTRY["conceptor-grad-cam"].no_graph


@pytest.mark.slow
def test_conceptor_grad_cam_on_real_photos(effnet_ort, effnet_images, check):
    out = effnet_ort.explain(effnet_images, "conceptor-grad-cam")
    check.assert_valid_maps(out.maps, len(effnet_images), (224, 224))
    assert np.isfinite(out.masked_scores).all()
