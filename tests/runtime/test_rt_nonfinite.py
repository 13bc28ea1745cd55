"""Issue 13, defect 7: a non-finite map is reported as such, with its likely cause, not blamed on the image."""

from __future__ import annotations

import numpy as np
import pytest

from opticam_rt.errors import NumericalError, OpticamError
from opticam_rt.runtime.checks import check_finite_maps


def test_nan_learning_rate_is_not_blamed_on_the_pixels(tiny_ort, tiny_images) -> None:
    with pytest.raises(OpticamError) as info:
        tiny_ort.explain(tiny_images[:2], "opti-cam", iterations=2, lr=float("nan"))
    text = str(info.value)
    assert "lr" in text and "image pixels" not in text


def test_model_giving_nan_is_named(tiny_ort, tiny_images, monkeypatch) -> None:
    """Non-finite model outputs (e.g. weights changed after loading) are named as the cause."""
    real = tiny_ort.runner.infer

    def poisoned(graph, feeds):
        out = real(graph, feeds)
        return {k: np.full_like(v, np.nan) if k in ("features", "grad_features") else v for k, v in out.items()}

    monkeypatch.setattr(tiny_ort.runner, "infer", poisoned)
    with pytest.raises(NumericalError, match=r"grad-cam map of image\(s\) 0, 1 is not finite.*model gave non-finite"):
        tiny_ort.explain(tiny_images[:2], "grad-cam")


@pytest.mark.parametrize(
    ("verification", "needle"),
    [({"passed": False}, "FAILED its parity check"), ({"status": "running"}, "did not finish"), (None, "model gave")],
)
def test_cause_follows_the_bundle_verification(verification, needle) -> None:
    maps = np.zeros((3, 4, 4), np.float32)
    maps[1, 0, 0] = np.nan
    with pytest.raises(NumericalError, match=needle) as info:
        check_finite_maps(maps, "opti-cam", {"lr": 0.1}, verification)
    assert "image(s) 1 " in str(info.value)
    check_finite_maps(np.zeros((2, 4, 4)), "opti-cam", {"lr": float("nan")}, None)  # finite maps pass
