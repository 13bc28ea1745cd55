"""Shared tolerances and helpers for the kernel tests (markers are registered in pyproject)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest

#: float32 kernels against a float64 reference (or another float32 path): relative to the
#: largest reference magnitude, so near-zero entries do not demand impossible precision.
RTOL = 1e-5
#: bilinear_matrix weights against F.interpolate (both float32, single rounding each).
BILINEAR_ATOL = 1e-6


def _assert_close(actual, expected, rtol: float = RTOL, what: str = "") -> None:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    err = float(np.abs(actual - expected).max(initial=0.0))
    assert err <= rtol * scale, f"{what}: max abs error {err:.3e} > {rtol:.1e} * max|expected| {scale:.3e}"


@pytest.fixture
def assert_close() -> Callable[..., None]:
    """``assert_close(actual, expected, rtol=RTOL, what="")`` with max-scaled tolerance."""
    return _assert_close


@pytest.fixture
def tol() -> SimpleNamespace:
    """The tolerances above, for tests that call numpy.testing directly."""
    return SimpleNamespace(rtol=RTOL, bilinear_atol=BILINEAR_ATOL)
