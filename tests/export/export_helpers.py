"""Tolerances (in one place) and helpers of the export tests; fixtures are in conftest.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from parity import relative_error  # noqa: F401 - re-exported for the export tests

#: float32 ONNX Runtime against a float64 PyTorch reference: max |actual - expected| divided by
#: max |expected|, per output. The tiny nets land near 1e-6; 1e-4 leaves room for BLAS
#: differences, yet a wrong padding, a missing term or a transposed weight is far beyond it.
PARITY_RTOL = 1e-4
#: onnx.reference (NumPy, float32) against ONNX Runtime (float32): both round differently.
REFERENCE_EVALUATOR_RTOL = 1e-4


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = PARITY_RTOL, what: str = "") -> None:
    """max |actual - expected| <= rtol * max |expected| (and equal shapes)."""
    err = relative_error(actual, expected)
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.0e}"


def ort_session(path: str | Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
