"""The error measure every parity test uses (export and runtime alike)."""

from __future__ import annotations

import numpy as np


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| in float64 (shapes must match); opticam_rt's
    export verification reports the same figure."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != expected {expected.shape}"
    scale = float(np.abs(expected).max(initial=0.0))
    diff = float(np.abs(actual - expected).max(initial=0.0))
    return diff / scale if scale > 0 else diff
