"""Bad shapes raise InputError naming the argument; dispatch never imports cupy for NumPy input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from opticam_rt.errors import InputError
from opticam_rt.kernels import (
    OpticamCache,
    bilinear_matrix,
    opticam_adjoint,
    opticam_forward,
    saliency_and_mask,
    scorecam_masked_copies,
)

A = np.zeros((2, 4, 5, 7), np.float32)
U = np.zeros((2, 4), np.float32)
X = np.zeros((2, 3, 10, 14), np.float32)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: opticam_forward(A[0], U, X), r"features must be 4-D \(N, K, h, w\), got shape \(4, 5, 7\)"),
        (lambda: opticam_forward(A, U, X[0]), r"images must be 4-D"),
        (lambda: opticam_forward(A, U, X[:1]), r"batch size.*\(2, 4, 5, 7\).*\(1, 3, 10, 14\)"),
        (lambda: opticam_forward(A, U[:, :3], X), r"u must have shape \(N, K\) = \(2, 4\).*\(2, 3\)"),
        (lambda: opticam_forward(A, U[0], X), r"u must be 2-D"),
        (lambda: saliency_and_mask(A, U[:1], X), r"weights must have shape \(N, K\)"),
        (lambda: saliency_and_mask(A[:, :, :0], U, X), r"features has an empty dimension"),
        (lambda: scorecam_masked_copies(A, X[:1]), r"batch size"),
        (lambda: scorecam_masked_copies(A, X, channels=3), r"channels must be a slice"),
        (lambda: scorecam_masked_copies(A, X, out=np.empty((8, 3, 10, 13), np.float32)), r"out must have shape"),
        (lambda: scorecam_masked_copies(A, X, out=np.empty((8, 3, 10, 14), np.float64)), r"out must be float32"),
        (lambda: bilinear_matrix(0, 7), r"out_size must be a positive integer"),
        (lambda: bilinear_matrix(7, 2.5), r"in_size must be a positive integer"),
    ],
)
def test_bad_shapes_raise_input_error(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_adjoint_checks_gradient_shape_and_cache():
    _, _, cache = opticam_forward(A, U, X)
    with pytest.raises(InputError, match=r"grad_masked must have the masked images' shape \(2, 3, 10, 14\)"):
        opticam_adjoint(X[:, :2], cache)
    with pytest.raises(InputError, match="cache must be the OpticamCache"):
        opticam_adjoint(X, {"features": A})
    assert isinstance(cache, OpticamCache)


def test_inputs_are_cast_to_float32():
    sal, masked = saliency_and_mask(A.astype(np.float64), U.tolist(), X.astype(np.float16))
    assert sal.dtype == masked.dtype == np.float32


def test_importing_and_running_on_numpy_never_imports_cupy():
    code = (
        "import sys, numpy as np; from opticam_rt import kernels as k;"
        "a = np.ones((1, 2, 3, 3), np.float32); x = np.ones((1, 3, 6, 6), np.float32);"
        "s, m, c = k.opticam_forward(a, np.zeros((1, 2), np.float32), x); k.opticam_adjoint(x, c);"
        "k.scorecam_masked_copies(a, x);"
        "assert 'cupy' not in sys.modules and 'opticam_rt.kernels.mask_cupy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
