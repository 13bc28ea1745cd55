"""Issue 21, defect 9: an explainer graph called directly (no Python wrapper) clamps its scalar
parameters instead of trusting them: lr=-1 ascended, lr=NaN gave a NaN map, patience<=0 was
taken, iterations=2**40 ran (and padded its loss output) without bound, chunk 0 divided by zero."""

from __future__ import annotations

import numpy as np
import pytest

from opticam_rt.constants import LR_RANGE, MAX_ITERATIONS

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def session(tiny_bundle):
    def make(method: str):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        return ort.InferenceSession(str(tiny_bundle.explainer_path(method)), options, providers=["CPUExecutionProvider"])

    return make


def run(sess, images, **scalars):
    feeds = {"image": images}
    for name, value in scalars.items():
        dtype = np.float32 if name in ("lr", "tol") else np.int64
        feeds[name] = np.array(value, dtype=dtype)
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


@pytest.fixture(scope="module")
def opti(session):
    return session("opti-cam")


def test_negative_lr_is_clamped_not_ascended(opti, tiny_images):
    got = run(opti, tiny_images, iterations=4, lr=-1.0)
    smallest = run(opti, tiny_images, iterations=4, lr=LR_RANGE[0])
    np.testing.assert_array_equal(got["map"], smallest["map"])
    np.testing.assert_array_equal(got["loss"], smallest["loss"])


def test_nan_lr_takes_the_default(opti, tiny_images):
    got = run(opti, tiny_images, iterations=4, lr=float("nan"))
    assert np.isfinite(got["map"]).all()
    np.testing.assert_array_equal(got["map"], run(opti, tiny_images, iterations=4)["map"])


def test_huge_lr_is_clamped(opti, tiny_images):
    got = run(opti, tiny_images, iterations=3, lr=float("inf"))
    np.testing.assert_array_equal(got["map"], run(opti, tiny_images, iterations=3, lr=LR_RANGE[1])["map"])


@pytest.mark.parametrize(("tol", "steps"), [(1e9, 2), (1e-30, 6)])  # every step quiet / none quiet
def test_patience_below_one_is_one(opti, tiny_images, tol, steps):
    """patience 0 stopped an image at its first checked step even when the loss still moved."""
    one = run(opti, tiny_images, iterations=6, tol=tol, patience=1)
    assert (one["steps"] == steps).all()  # the first step has no previous loss to compare with
    for patience in (0, -7):
        got = run(opti, tiny_images, iterations=6, tol=tol, patience=patience)
        np.testing.assert_array_equal(got["steps"], one["steps"])
        np.testing.assert_array_equal(got["map"], one["map"])


def test_iterations_are_bounded(opti, tiny_images):
    got = run(opti, tiny_images[:1], iterations=2**40, tol=1e9, patience=1)  # stops early; the bound shows in the shapes
    assert got["loss"].shape == (MAX_ITERATIONS, 1) and got["steps"].tolist() == [2]
    for low in (0, -5):
        got = run(opti, tiny_images, iterations=low)
        assert got["loss"].shape == (1, len(tiny_images)) and (got["steps"] == 1).all()


def test_nan_tol_runs_every_step(opti, tiny_images):
    got = run(opti, tiny_images, iterations=5, tol=float("nan"), patience=1)
    assert (got["steps"] == 5).all()


@pytest.mark.parametrize("method", ["score-cam", "ablation-cam"])
def test_chunk_is_clamped_to_one_and_k(session, tiny_images, method, tiny):
    sess = session(method)
    one = run(sess, tiny_images, chunk=1)["map"]
    for chunk in (0, -3):
        np.testing.assert_allclose(run(sess, tiny_images, chunk=chunk)["map"], one, rtol=0, atol=1e-6)
    np.testing.assert_allclose(run(sess, tiny_images, chunk=10**12)["map"], run(sess, tiny_images, chunk=tiny.K)["map"],
                               rtol=0, atol=1e-6)
