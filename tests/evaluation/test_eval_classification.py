"""Tests of AD / AI / AG against hand-worked numbers and of the masking helpers."""

from __future__ import annotations

import numpy as np
import pytest

from opticam_rt.errors import InputError
from opticam_rt.evaluation.classification import (
    average_drop,
    average_drop_per_image,
    average_gain,
    average_gain_per_image,
    average_increase,
    average_increase_per_image,
    classification_metrics,
    classification_metrics_per_image,
    mask_images,
    target_probabilities,
)

# Hand-worked: image 1 drops 0.8 -> 0.4 (drop 0.4/0.8 = 50 %), image 2 is unchanged, image 3
# rises 0.2 -> 0.6 (gain 0.4/0.8 = 50 %), image 4 rises 0.9 -> 0.95 (gain 0.05/0.1 = 50 %).
P = np.array([0.8, 0.5, 0.2, 0.9])
O = np.array([0.4, 0.5, 0.6, 0.95])


def test_hand_worked_values() -> None:
    assert average_drop(P, O) == pytest.approx(50.0 / 4)
    assert average_increase(P, O) == pytest.approx(2 * 100.0 / 4)
    assert average_gain(P, O) == pytest.approx(2 * 50.0 / 4)
    assert classification_metrics(P, O) == pytest.approx({"AD": 12.5, "AI": 50.0, "AG": 25.0})


def test_per_image_values_and_their_mean_is_the_metric() -> None:
    np.testing.assert_allclose(average_drop_per_image(P, O), [50.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(average_increase_per_image(P, O), [0.0, 0.0, 100.0, 0.0 + 100.0])
    np.testing.assert_allclose(average_gain_per_image(P, O), [0.0, 0.0, 50.0, 50.0])
    per = classification_metrics_per_image(P, O)
    total = classification_metrics(P, O)
    for key in ("AD", "AG", "AI"):
        assert np.mean(per[key]) == pytest.approx(total[key])


def test_equal_probabilities_give_zero_everywhere() -> None:
    p = np.array([0.1, 0.7, 1.0, 0.0])
    assert classification_metrics(p, p) == {"AD": 0.0, "AG": 0.0, "AI": 0.0}


def test_degenerate_denominators_are_zero_not_nan() -> None:
    # p = 0 cannot drop; p = 1 cannot gain: both are defined as 0 instead of 0/0.
    assert average_drop_per_image(np.array([0.0]), np.array([0.3]))[0] == 0.0
    assert average_gain_per_image(np.array([1.0]), np.array([0.3]))[0] == 0.0
    assert average_drop_per_image(np.array([1.0]), np.array([0.25]))[0] == pytest.approx(75.0)


@pytest.mark.parametrize(
    ("p", "o"),
    [
        (np.array([0.5, 1.2]), np.array([0.5, 0.5])),  # not a probability
        (np.array([0.5, np.nan]), np.array([0.5, 0.5])),
        (np.array([0.5, 0.5]), np.array([0.5])),  # shape mismatch
        (np.array([[0.5]]), np.array([[0.5]])),  # not 1-D
        (np.array([]), np.array([])),
    ],
)
def test_bad_inputs_raise_input_error(p: np.ndarray, o: np.ndarray) -> None:
    with pytest.raises(InputError):
        average_drop(p, o)


def brightness_predictor(calls: list[int] | None = None):
    """Fake classifier: class 1 has probability = mean brightness of the whole image."""

    def predict(x: np.ndarray) -> np.ndarray:
        if calls is not None:
            calls.append(x.shape[0])
        b = x.mean(axis=(1, 2, 3)).astype(np.float64)
        return np.stack([1.0 - b, b], axis=1)

    return predict


def test_map_of_all_ones_leaves_the_probability_unchanged() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.9, size=(5, 3, 6, 7)).astype(np.float32)
    ones = np.ones((5, 6, 7), np.float32)
    predict = brightness_predictor()
    p = target_probabilities(x, np.ones(5, int), predict)
    o = target_probabilities(x, np.ones(5, int), predict, saliency=ones)
    np.testing.assert_allclose(o, p)
    assert average_drop(p, o) == 0.0
    assert average_increase(p, o) == 0.0
    assert average_gain(p, o) == 0.0


def test_masking_is_in_pixel_space_and_batched() -> None:
    x = np.full((5, 3, 4, 4), 0.8, np.float32)
    s = np.zeros((5, 4, 4), np.float32)
    s[:, :2, :] = 1.0  # top half kept, bottom half black
    np.testing.assert_allclose(mask_images(x, s)[0, 1], [[0.8] * 4] * 2 + [[0.0] * 4] * 2)
    calls: list[int] = []
    o = target_probabilities(x, np.ones(5, int), brightness_predictor(calls), saliency=s, batch_size=2)
    np.testing.assert_allclose(o, 0.4, rtol=1e-6)
    assert calls == [2, 2, 1]
    # Half the brightness: drop 50 % on every image.
    assert average_drop(np.full(5, 0.8), o) == pytest.approx(50.0, rel=1e-5)


def test_target_probabilities_checks_the_predictor_output() -> None:
    x = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(InputError, match="out of range"):
        target_probabilities(x, np.array([0, 5]), brightness_predictor())
    with pytest.raises(InputError, match="must return shape"):
        target_probabilities(x, np.array([0, 1]), lambda imgs: np.zeros((1, 2)))
    with pytest.raises(InputError):
        mask_images(x, np.ones((2, 5, 4)))
