"""Extremal Perturbation: the host's mask algebra against finite differences, and the host loop
over the bundle graphs against the independent PyTorch reference (fewer steps than the 800
default, so the tests stay fast)."""

from __future__ import annotations

import numpy as np
import pytest

from opticam_rt.errors import InputError
from opticam_rt.methods.extremal_perturbation.host import SmoothMaxGenerator, blur_matrix, parse_areas, perturb, pyramid


def test_smooth_max_adjoint_matches_central_differences():
    gen = SmoothMaxGenerator(12, 10, step=3, sigma=4.0, coldness=20.0)
    rng = np.random.default_rng(0)
    params = rng.uniform(0, 1, (2, gen.grid[0] * gen.grid[1]))
    weights = rng.normal(size=(2, 120))
    m, cache = gen.forward(params)
    assert m.shape == (2, 120) and 0 <= m.min() and m.max() <= 1
    got = gen.adjoint(weights, cache)
    h = 1e-6
    for j in range(params.shape[1]):
        up, dn = params.copy(), params.copy()
        up[:, j] += h
        dn[:, j] -= h
        numeric = ((gen.forward(up)[0] - gen.forward(dn)[0]) * weights).sum(axis=1) / (2 * h)
        np.testing.assert_allclose(got[:, j], numeric, rtol=1e-5, atol=1e-8)


def test_smooth_mask_of_one_pixel_by_hand():
    gen = SmoothMaxGenerator(28, 21, step=7, sigma=21.0, coldness=20.0)
    params = np.random.default_rng(2).uniform(0, 1, (1, 4 * 3))
    m, _ = gen.forward(params)
    y, x = 9, 17  # cell (1, 2); r = 4 reaches every grid point of this 4 x 3 grid
    values = []
    for gy in range(4):
        for gx in range(3):
            d = np.hypot(y - (7 * gy + 3), x - (7 * gx + 3))
            values.append(np.exp(-2 * max(d / 21 - 0.5, 0) ** 2) * params[0, gy * 3 + gx])
    v = np.array(values)
    w = np.exp(20 * v - (20 * v).max())
    assert m[0, y * 21 + x] == pytest.approx((v * w).sum() / w.sum(), rel=1e-6)  # kernel stored in float32


def test_blur_pyramid_levels_and_perturbation_gradient():
    rng = np.random.default_rng(1)
    x = rng.random((1, 3, 9, 11)).astype(np.float32)
    b = blur_matrix(9, 2.0)
    np.testing.assert_allclose(b.sum(axis=1), 1.0)
    np.testing.assert_array_equal(blur_matrix(5, 0.0), np.eye(5))
    levels = pyramid(x, 8, 20.0, "blur")
    np.testing.assert_allclose(levels[0, -1], x[0], atol=1e-6)  # the last level is the image
    assert levels[0, 0].std() < 0.5 * x.std()  # the first is blurred with sigma 20
    np.testing.assert_allclose(pyramid(x, 8, 20.0, "fade")[0, 3], x[0] * 3 / 7, rtol=1e-6)
    m = rng.uniform(0.05, 0.95, (1, 9, 11))
    img, d = perturb(levels, m)
    h = 1e-4
    numeric = (perturb(levels, m + h)[0] - perturb(levels, m - h)[0]) / (2 * h)
    np.testing.assert_allclose(d, numeric, rtol=1e-2, atol=2e-2)
    with pytest.raises(InputError, match="fractions in"):
        parse_areas("0.1,1.5")


@pytest.mark.parametrize("options", [{"iterations": 25}, {"iterations": 12, "variant": "delete", "reward": "contrastive",
                                                     "perturbation": "fade", "areas": "0.05,0.2", "lr": 0.05}])
def test_host_matches_the_pytorch_reference(options, tiny_ort, tiny_torch, tiny_images, check):
    images = tiny_images[:2]
    a = tiny_ort.explain(images, method="extremal-perturbation", **options)
    b = tiny_torch.explain(images, method="extremal-perturbation", **options)
    check.assert_valid_maps(a.maps, 2, (32, 32))
    corr = check.correlations(a.maps, b.maps)
    assert (corr >= 0.95).all(), corr
    # The energy, step by step; float32 vs float64 rounding reorders near-equal mask values in
    # the area term's sort, which moves it by up to ~0.5% here.
    np.testing.assert_allclose(a.trace, b.trace, rtol=2e-2)
    assert a.trace.shape == (2, options["iterations"])
    # The mask moved: the regulariser pulled it off its all-ones start.
    assert not np.allclose(a.trace[:, 0], a.trace[:, -1])
