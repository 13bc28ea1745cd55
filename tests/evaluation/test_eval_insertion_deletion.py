"""Tests of insertion / deletion curves with a fake classifier whose score is a region's brightness."""

from __future__ import annotations

import numpy as np
import pytest

from opticam_rt.errors import InputError
from opticam_rt.evaluation.insertion_deletion import (
    auc,
    deletion,
    gaussian_blur,
    gaussian_kernel,
    insertion,
    perturbation_curves,
    saliency_order,
)


class RegionBrightness:
    """Fake classifier: p(class 1) = mean brightness of rows r0:r1, cols c0:c1; records every batch."""

    def __init__(self, r0: int, r1: int, c0: int, c1: int) -> None:
        self.region = (slice(r0, r1), slice(c0, c1))
        self.batches: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(x)
        b = x[:, :, self.region[0], self.region[1]].mean(axis=(1, 2, 3)).astype(np.float64)
        return np.stack([1.0 - b, b], axis=1)


def raster_saliency(h: int, w: int) -> np.ndarray:
    """A map whose descending order is the raster order 0, 1, ..., h*w - 1."""
    return (np.arange(h * w)[::-1] / (h * w - 1)).reshape(h, w).astype(np.float32)


def test_saliency_order_descending_with_raster_tie_break() -> None:
    s = np.array([[0.5, 1.0], [0.5, 1.0]])
    assert saliency_order(s).tolist() == [1, 3, 0, 2]
    assert saliency_order(np.zeros((2, 3))).tolist() == [0, 1, 2, 3, 4, 5]
    # Large enough that an unstable sort would reorder ties: every 7th pixel first, then the rest.
    s = np.zeros((30, 30))
    s.ravel()[::7] = 1.0
    flat = np.arange(900)
    expected = np.concatenate([flat[::7], flat[flat % 7 != 0]])
    np.testing.assert_array_equal(saliency_order(s), expected)


def test_auc_is_the_trapezoid_rule_over_unit_interval() -> None:
    # Two trapezoids of width 0.5: (0 + 1) / 2 * 0.5 + (1 + 0.5) / 2 * 0.5 = 0.625.
    assert auc(np.array([0.0, 1.0, 0.5])) == pytest.approx(0.625)
    np.testing.assert_allclose(auc(np.array([[1.0, 1.0], [0.0, 1.0]])), [1.0, 0.5])


def test_deletion_curve_by_hand() -> None:
    # 4 x 4 white image; the score is the brightness of the top-left 2 x 2 block. Pixels go
    # in raster order, 4 per step (= one row): after step 1 half the block is black, after
    # step 2 all of it.
    x = np.ones((1, 3, 4, 4), np.float32)
    model = RegionBrightness(0, 2, 0, 2)
    res = deletion(x, raster_saliency(4, 4)[None], np.array([1]), model, steps=4)
    np.testing.assert_allclose(res.curves, [[1.0, 0.5, 0.0, 0.0, 0.0]])
    # AUC: 0.25 * ((1 + 0.5) / 2 + (0.5 + 0) / 2) = 0.25.
    np.testing.assert_allclose(res.aucs, [0.25])


def test_deletion_follows_the_saliency_not_the_raster_order() -> None:
    # The most salient pixels are the bottom-right block this time: the score (top-left
    # block) stays 1 until the last two steps.
    x = np.ones((1, 3, 4, 4), np.float32)
    s = raster_saliency(4, 4)[::-1, ::-1].copy()
    res = deletion(x, s[None], np.array([1]), RegionBrightness(0, 2, 0, 2), steps=4)
    np.testing.assert_allclose(res.curves, [[1.0, 1.0, 1.0, 0.5, 0.0]])
    np.testing.assert_allclose(res.aucs, [0.25 * (1 + 1 + 0.75 + 0.25)])


def test_default_pixels_per_step_is_ceil_and_last_step_is_clamped() -> None:
    # 5 x 5 = 25 pixels in 4 steps: ceil(25 / 4) = 7 pixels per step, so 7, 14, 21, 25 deleted.
    x = np.ones((1, 3, 5, 5), np.float32)
    res = deletion(x, raster_saliency(5, 5)[None], np.array([1]), RegionBrightness(0, 5, 0, 5), steps=4)
    np.testing.assert_allclose(res.curves, [[1.0, 18 / 25, 11 / 25, 4 / 25, 0.0]], rtol=1e-6)


def test_explicit_pixels_per_step_may_stop_short() -> None:
    x = np.ones((1, 3, 4, 4), np.float32)
    res = deletion(x, raster_saliency(4, 4)[None], np.array([1]), RegionBrightness(0, 4, 0, 4),
                   steps=2, pixels_per_step=3)
    np.testing.assert_allclose(res.curves, [[1.0, 13 / 16, 10 / 16]], rtol=1e-6)
    assert res.curves.shape == (1, 3)


def test_every_step_of_every_image_is_batched_through_the_model() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(3, 3, 4, 4)).astype(np.float32)
    s = rng.uniform(size=(3, 4, 4)).astype(np.float32)
    model = RegionBrightness(0, 4, 0, 4)
    seen: list[tuple[int, int]] = []
    res = deletion(x, s, np.array([1, 1, 1]), model, steps=4, batch_size=4,
                   progress=lambda done, total: seen.append((done, total)))
    sizes = [b.shape[0] for b in model.batches]
    assert sum(sizes) == 3 * 5 and max(sizes) <= 4
    assert seen[-1] == (15, 15) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    images = np.concatenate(model.batches)
    # The 0-step point is the image itself and the last point is all black, per image.
    for i in range(3):
        np.testing.assert_array_equal(images[5 * i], x[i])
        assert not images[5 * i + 4].any()
    np.testing.assert_allclose(res.curves[:, 0], x.mean(axis=(1, 2, 3)), rtol=1e-6)
    # Each step blacks out exactly the next 4 pixels in the map's order, for every channel.
    for i in range(3):
        order = saliency_order(s[i])
        for k in range(1, 5):
            off = images[5 * i + k].reshape(3, -1)
            assert not off[:, order[: 4 * k]].any()
            np.testing.assert_array_equal(off[:, order[4 * k:]], x[i].reshape(3, -1)[:, order[4 * k:]])


def torch_reference_blur(x: np.ndarray, size: int, sigma: float) -> np.ndarray:
    torch = pytest.importorskip("torch")
    r = np.arange(size) - size // 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    k2 = np.outer(g, g) / np.outer(g, g).sum()
    t = torch.from_numpy(x.astype(np.float64))
    c = t.shape[1]
    t = torch.nn.functional.pad(t, (size // 2,) * 4, mode="reflect")
    w = torch.from_numpy(k2)[None, None].repeat(c, 1, 1, 1)
    return torch.nn.functional.conv2d(t, w, groups=c).numpy()


def test_gaussian_kernel_shape_and_ratio() -> None:
    k = gaussian_kernel(11, 5.0)
    assert k.shape == (11,) and k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k[::-1])
    assert k[5] / k[0] == pytest.approx(np.exp(25 / 50))
    with pytest.raises(InputError):
        gaussian_kernel(10, 5.0)


def test_blur_matches_reflect_padded_convolution_and_keeps_constants() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(2, 3, 16, 13)).astype(np.float32)
    np.testing.assert_allclose(gaussian_blur(x), torch_reference_blur(x, 11, 5.0), atol=1e-6)
    # Reflect padding: a constant image stays constant up to its border (zero padding would not).
    np.testing.assert_allclose(gaussian_blur(np.full((3, 12, 12), 0.6, np.float32)), 0.6, rtol=1e-6)


def test_insertion_by_hand_on_a_constant_image() -> None:
    # Blurring a constant image changes nothing, so the curve is flat at its brightness.
    x = np.full((1, 3, 6, 6), 0.6, np.float32)
    res = insertion(x, raster_saliency(6, 6)[None], np.array([1]), RegionBrightness(0, 2, 0, 2), steps=3)
    np.testing.assert_allclose(res.curves, [[0.6] * 4], rtol=1e-6)
    np.testing.assert_allclose(res.aucs, [0.6], rtol=1e-6)


def test_insertion_reveals_original_pixels_on_the_blurred_image() -> None:
    h = w = 12
    x = np.zeros((1, 3, h, w), np.float32)
    x[0, :, 3:6, 3:6] = 1.0
    blurred = torch_reference_blur(x, 11, 5.0)[0]
    s = raster_saliency(h, w)
    model = RegionBrightness(2, 7, 2, 7)
    steps, pps = 6, 24
    res = insertion(x, s[None], np.array([1]), model, steps=steps, batch_size=5)
    order = np.arange(h * w)  # raster order by construction of s
    expected = []
    for k in range(steps + 1):
        revealed = np.zeros(h * w, bool)
        revealed[order[: k * pps]] = True
        img = np.where(revealed.reshape(h, w), x[0], blurred)
        expected.append(img[:, 2:7, 2:7].mean())
    np.testing.assert_allclose(res.curves[0], expected, atol=1e-6)
    np.testing.assert_allclose(res.curves[0, -1], x[0, :, 2:7, 2:7].mean(), atol=1e-6)
    np.testing.assert_allclose(res.aucs[0], np.trapezoid(expected, dx=1 / steps), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [{"steps": 0}, {"pixels_per_step": 0}, {"batch_size": 0}, {"mode": "erase"}],
)
def test_bad_options_raise_input_error(kwargs: dict) -> None:
    x = np.ones((1, 3, 4, 4), np.float32)
    args = {"mode": "deletion", **kwargs}
    with pytest.raises(InputError):
        perturbation_curves(x, np.ones((1, 4, 4)), np.array([1]), RegionBrightness(0, 1, 0, 1), **args)


def test_saliency_shape_must_match_images() -> None:
    with pytest.raises(InputError):
        deletion(np.ones((1, 3, 4, 4)), np.ones((1, 4, 5)), np.array([1]), RegionBrightness(0, 1, 0, 1))
