"""Tests of the localisation metrics on synthetic maps and boxes with hand-worked answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from opticam_rt.errors import InputError
from opticam_rt.evaluation.localisation import (
    box_accuracy,
    box_accuracy_grid,
    box_iou,
    boxes_mask,
    connected_components,
    energy_pointing_game,
    localisation_error,
    localisation_metrics,
    max_box_accuracy,
    max_iou,
    official_metric,
    pixel_f1,
    pointing_game,
    predicted_box,
    resize_bilinear,
    saliency_metric,
)

# ------------------------------------------------------------------ boxes and components


def test_box_iou_by_hand() -> None:
    assert box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 2, 2), (2, 0, 4, 2)) == 0.0  # touching, inclusive-exclusive


def test_boxes_mask_is_the_union_inclusive_exclusive_and_clipped() -> None:
    m = boxes_mask([(0, 0, 2, 1), (1, 0, 3, 2), (4, 3, 99, 99)], height=4, width=5)
    expected = np.array([
        [1, 1, 1, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 1],
    ], bool)
    np.testing.assert_array_equal(m, expected)
    with pytest.raises(InputError):
        boxes_mask([(5, 5, 9, 9)], 4, 4)  # entirely outside
    with pytest.raises(InputError):
        boxes_mask([], 4, 4)


def test_connected_components_diagonal_touch_depends_on_connectivity() -> None:
    m = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]], bool)
    labels8, n8 = connected_components(m, 8)
    labels4, n4 = connected_components(m, 4)
    assert (n8, n4) == (2, 3)
    np.testing.assert_array_equal(labels8, [[1, 0, 0], [0, 1, 0], [0, 0, 0], [2, 2, 2]])
    np.testing.assert_array_equal(labels4, [[1, 0, 0], [0, 2, 0], [0, 0, 0], [3, 3, 3]])


def test_connected_components_u_shape_merges_late() -> None:
    # Two arms that only join at the bottom row: one component, found through union-find.
    m = np.array([[1, 0, 1], [1, 0, 1], [1, 1, 1]], bool)
    labels, n = connected_components(m, 4)
    assert n == 1 and (labels[m] == 1).all()


@pytest.mark.parametrize("connectivity", [4, 8])
def test_connected_components_agree_with_scipy(connectivity: int) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(3)
    structure = np.ones((3, 3)) if connectivity == 8 else None
    for density in (0.3, 0.5, 0.6):
        m = rng.uniform(size=(40, 37)) < density
        ours, n = connected_components(m, connectivity)
        ref, n_ref = ndimage.label(m, structure=structure)
        assert n == n_ref
        # Same partition: each of our labels maps to exactly one of scipy's and back.
        pairs = set(zip(ours[m].tolist(), ref[m].tolist()))
        assert len(pairs) == n
        np.testing.assert_array_equal(ours == 0, ~m)


def blob_map() -> np.ndarray:
    """20 x 20 map: a 5 x 7 blob (rows 2-6, cols 3-9) and a smaller 2 x 2 blob, both at 1."""
    s = np.zeros((20, 20), np.float32)
    s[2:7, 3:10] = 1.0
    s[12:14, 14:16] = 1.0
    return s


def test_predicted_box_is_the_largest_component() -> None:
    assert predicted_box(blob_map(), 0.5) == (3, 2, 10, 7)
    assert predicted_box(blob_map(), "mean") == (3, 2, 10, 7)
    # Strict threshold: a constant map has no foreground and so no box.
    assert predicted_box(np.full((5, 5), 0.3), "mean") is None


def test_box_accuracy_with_a_synthetic_blob() -> None:
    s = blob_map()
    assert box_accuracy(s, [(3, 2, 10, 7)])
    # GT shifted 3 px right: intersection 4 x 5 = 20, union 35 + 35 - 20 = 50, IoU 0.4.
    shifted = [(6, 2, 13, 7)]
    assert max_iou(s, shifted, 0.5) == pytest.approx(0.4)
    assert not box_accuracy(s, shifted, iou_threshold=0.5)
    assert box_accuracy(s, shifted, iou_threshold=0.3)
    # Any of several GT boxes may match.
    assert box_accuracy(s, [(0, 15, 3, 19), (3, 2, 10, 7)])


def test_box_accuracy_grid_and_max_box_accuracy() -> None:
    s = np.zeros((20, 20))
    s[0:2, 0:2] = 1.0  # small, strong blob
    s[8:16, 8:16] = 0.6  # large, weaker blob = the GT
    grid = box_accuracy_grid(s, [(8, 8, 16, 16)], thresholds=(0.5, 0.7), iou_thresholds=(0.5, 0.9))
    # eta 0.5 keeps both blobs, the large one wins; eta 0.7 keeps only the small one.
    np.testing.assert_array_equal(grid, [[True, True], [False, False]])
    grids = np.array([[[1, 0], [1, 1], [0, 0]], [[0, 0], [1, 0], [0, 1]]])  # (N=2, T=3, D=2)
    # Mean over images [[.5, 0], [1, .5], [0, .5]] -> max over eta [1, .5] -> mean over delta .75.
    assert max_box_accuracy(grids) == pytest.approx(75.0)


# --------------------------------------------------------------------- pointing games


def peak_map(row: int, col: int, size: int = 64) -> np.ndarray:
    s = np.full((size, size), 0.1)
    s[row, col] = 1.0
    return s


BOX = [(40, 10, 50, 20)]  # columns 40-49, rows 10-19


@pytest.mark.parametrize(
    ("row", "col", "hit"),
    [
        (15, 45, True),  # inside
        (15, 26, True),  # 14 px left of column 40
        (15, 25, False),  # exactly 15 px: not strictly within the tolerance
        (15, 63, True),  # 14 px right of column 49
        (1, 31, True),  # diagonal from corner (40, 10): 9^2 + 9^2 = 162 < 225
        (0, 28, False),  # 12^2 + 10^2 = 244 >= 225
        (33, 45, True),  # 14 px below the last row (19)
        (34, 45, False),  # exactly 15 px below: a miss
    ],
)
def test_pointing_game_tolerance_boundary(row: int, col: int, hit: bool) -> None:
    assert pointing_game(peak_map(row, col), BOX, tolerance=15) is hit


def test_pointing_game_without_tolerance_and_several_boxes() -> None:
    assert pointing_game(peak_map(15, 45), BOX, tolerance=0)
    assert not pointing_game(peak_map(15, 39), BOX, tolerance=0)
    assert pointing_game(peak_map(15, 39), BOX, tolerance=15)
    assert pointing_game(peak_map(60, 5), [*BOX, (0, 55, 10, 64)], tolerance=0)
    # Ties for the max: the first pixel in raster order is the point.
    s = np.zeros((64, 64))
    s[0, 0] = s[15, 45] = 1.0
    assert not pointing_game(s, BOX, tolerance=15)


def test_energy_pointing_game_by_hand() -> None:
    s = np.zeros((10, 10))
    s[2:4, 2:4] = 1.0  # energy 4 inside the box
    s[8, 8] = s[8, 9] = 0.5  # energy 1 outside
    assert energy_pointing_game(s, [(2, 2, 4, 4)]) == pytest.approx(0.8)
    assert energy_pointing_game(np.zeros((10, 10)), [(2, 2, 4, 4)]) == 0.0


# ------------------------------------------------------------------------------- F1


def test_pixel_f1_thresholded_by_hand() -> None:
    s = np.zeros((10, 10))
    s[0:4, 0:6] = 1.0  # 24 px, 16 of them in the box
    # P = 16/24, R = 16/16: F1 = 2 * (2/3) / (5/3) = 0.8.
    assert pixel_f1(s, [(0, 0, 4, 4)]) == pytest.approx(0.8)
    assert pixel_f1(np.zeros((10, 10)), [(0, 0, 4, 4)]) == 0.0


def test_pixel_f1_soft_opticam_variant_by_hand() -> None:
    s = np.zeros((10, 10))
    s[0:4, 0:4] = 0.5  # mass 8 inside the 16-px box
    s[9, 0:8] = 0.25  # mass 2 outside
    # P = 8/10, R = 8/16: F1 = 2 * 0.4 / 1.3.
    assert pixel_f1(s, [(0, 0, 4, 4)], threshold=None) == pytest.approx(0.8 / 1.3)
    # Thresholded at half the max (0.25, strict), only the box survives: F1 = 1.
    assert pixel_f1(s, [(0, 0, 4, 4)], threshold=0.5) == pytest.approx(1.0)


# ---------------------------------------------------------------------------- OM, LE

IOUS = np.array([0.7, 0.3, 0.6, 0.5])
CORRECT = np.array([True, True, False, False])


def test_localisation_error_and_official_metric_ilsvrc() -> None:
    np.testing.assert_array_equal(localisation_error(IOUS), [0, 1, 0, 0])
    np.testing.assert_array_equal(official_metric(IOUS, CORRECT), [0, 1, 1, 1])
    assert official_metric(IOUS, CORRECT).mean() * 100 == pytest.approx(75.0)


def test_localisation_error_and_official_metric_opticam_variant() -> None:
    np.testing.assert_allclose(localisation_error(IOUS, None), [0.3, 0.7, 0.4, 0.5])
    np.testing.assert_allclose(official_metric(IOUS, CORRECT, None), [0.3, 0.7, 1.0, 1.0])


def test_official_metric_needs_boolean_flags() -> None:
    with pytest.raises(InputError):
        official_metric(IOUS, np.array([1, 1, 0, 0]))
    with pytest.raises(InputError):
        localisation_error(np.array([1.5]))


# ------------------------------------------------------------------------------- SM


def test_resize_bilinear_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(3, 5, 7)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=(16, 12), mode="bilinear",
                                          align_corners=False, antialias=False)[0].numpy()
    np.testing.assert_allclose(resize_bilinear(x, 16, 12), ref, atol=1e-6)
    np.testing.assert_array_equal(resize_bilinear(x, 5, 7), x)


def mean_brightness(x: np.ndarray) -> np.ndarray:
    b = x.mean(axis=(1, 2, 3)).astype(np.float64)
    return np.stack([1.0 - b, b], axis=1)


def test_saliency_metric_with_a_fake_predictor() -> None:
    # Image 0: a 4 x 4 block at 0.5 in an 8 x 8 black image, map = the block. The crop is the
    # block (area 16/64 = 0.25), resized it is uniformly 0.5: SM = log 0.25 - log 0.5.
    # Image 1: a 2 x 2 block on 16 x 16 would be below the 5 % floor; here 1 x 1 on 8 x 8
    # (area 1/64): SM = log 0.05 - log 0.5.
    # Image 2: a constant map has no salient region: the whole image is kept (area 1), whose
    # brightness is 16 * 0.5 / 64 = 0.125: SM = -log 0.125.
    x = np.zeros((3, 3, 8, 8), np.float32)
    s = np.zeros((3, 8, 8), np.float32)
    x[0, :, 2:6, 2:6] = 0.5
    s[0, 2:6, 2:6] = 1.0
    x[1, :, 3, 4] = 0.5
    s[1, 3, 4] = 1.0
    x[2, :, 2:6, 2:6] = 0.5
    s[2] = 0.7
    sm = saliency_metric(x, s, np.array([1, 1, 1]), mean_brightness, batch_size=2)
    np.testing.assert_allclose(sm, [math.log(0.25) - math.log(0.5),
                                    math.log(0.05) - math.log(0.5),
                                    -math.log(0.125)], rtol=1e-5)


# ------------------------------------------------------------------------ all at once


def test_localisation_metrics_per_image_dict() -> None:
    s = blob_map()
    gt = [(3, 2, 10, 7)]
    std = localisation_metrics(s, gt, correct_class=False, box_thresholds=(0.5, 1.0))
    assert std["SP"] == 100.0 and std["BoxAcc"] == 100.0 and std["LE"] == 0.0
    assert std["OM"] == 100.0  # wrong class: an official-metric error even with a perfect box
    assert std["EP"] == pytest.approx(100 * 35 / 39)
    # eta 1.0 leaves no pixel strictly above the max: no box, a miss at every delta.
    assert std["box_acc_grid"] == [[1, 1, 1], [0, 0, 0]]
    assert "OM" not in localisation_metrics(s, gt)
    shifted = [(6, 2, 13, 7)]  # IoU 0.4 with the predicted box
    ours = localisation_metrics(s, shifted, correct_class=True, protocol="opticam")
    assert ours["LE"] == pytest.approx(60.0) and ours["OM"] == pytest.approx(60.0)
    std = localisation_metrics(s, shifted, correct_class=True)
    assert std["LE"] == 100.0 and std["OM"] == 100.0
    with pytest.raises(InputError):
        localisation_metrics(s, gt, protocol="other")  # type: ignore[arg-type]
