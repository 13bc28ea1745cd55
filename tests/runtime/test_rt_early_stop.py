"""Opti-CAM early stopping (``tol``): stopped images leave the batch, their trace ends in NaN."""

from __future__ import annotations

import numpy as np
import pytest

ITERATIONS = 60
TOL = 1e-3
PATIENCE = 3
#: The graph each pipeline runs once per Opti-CAM step.
STEP_GRAPH = {"fused": "opticam_step", "split": "grad_image"}


def record_batches(monkeypatch, runner) -> dict[str, list[int]]:
    """Wrap ``runner.infer`` to record the batch size of every call, per graph."""
    seen: dict[str, list[int]] = {}
    original = runner.infer

    def infer(graph, feeds):
        seen.setdefault(graph, []).append(len(next(iter(feeds.values()))))
        return original(graph, feeds)

    monkeypatch.setattr(runner, "infer", infer)
    return seen


@pytest.mark.parametrize("pipeline", ("fused", "split"))
def test_early_stopping_shrinks_the_batch(pipeline, monkeypatch, tiny_ort, tiny_images):
    seen = record_batches(monkeypatch, tiny_ort.runner)
    out = tiny_ort.explain(tiny_images, "opti-cam", iterations=ITERATIONS, tol=TOL, patience=PATIENCE, pipeline=pipeline)
    n = len(tiny_images)
    used = out.iterations
    # The trace grows with the steps run: one column per step until the last image stopped.
    assert used.shape == (n,) and out.trace.shape == (n, used.max())
    assert used.min() < ITERATIONS, f"no image stopped early: {used}"
    for i in range(n):
        assert np.isfinite(out.trace[i, : used[i]]).all(), i
        assert np.isnan(out.trace[i, used[i] :]).all(), i
        if used[i] < ITERATIONS:
            # it stopped for the documented reason: `patience` quiet steps in a row
            t = out.trace[i, used[i] - PATIENCE - 1 : used[i]]  # float32, as the stopping rule computes
            change = np.abs(np.diff(t)) / np.abs(t[:-1])
            assert (change <= TOL).all(), (i, change)
    batches = seen[STEP_GRAPH[pipeline]]
    assert len(batches) == used.max()
    assert batches[0] == n and batches[-1] < n, batches
    assert all(a >= b for a, b in zip(batches, batches[1:])), f"batch grew again: {batches}"
    assert sum(batches) == used.sum(), "the runner did work for stopped images"
    # record() reports the last loss the image actually had, the steps it took and the budget asked
    for i in range(n):
        rec = out.record(i)
        assert rec["final_loss"] == pytest.approx(float(out.trace[i, used[i] - 1]))
        assert rec["steps"] == used[i] and rec["iterations"] == ITERATIONS


def test_stopping_does_not_disturb_the_other_images(tiny_ort, tiny_images):
    """Images still running follow the same path as in a run without early stopping."""
    stopped = tiny_ort.explain(tiny_images, "opti-cam", iterations=ITERATIONS, tol=TOL, patience=PATIENCE)
    full = tiny_ort.explain(tiny_images, "opti-cam", iterations=ITERATIONS)
    assert not np.isnan(full.trace).any() and (full.iterations == ITERATIONS).all()
    for i in range(len(tiny_images)):
        k = stopped.iterations[i]
        np.testing.assert_allclose(stopped.trace[i, :k], full.trace[i, :k], rtol=1e-4, err_msg=f"image {i}")
    running = stopped.iterations == ITERATIONS
    assert running.any()
    np.testing.assert_allclose(stopped.maps[running], full.maps[running], atol=1e-3)


def test_no_tol_runs_every_iteration(monkeypatch, tiny_ort, tiny_images):
    seen = record_batches(monkeypatch, tiny_ort.runner)
    out = tiny_ort.explain(tiny_images, "opti-cam", iterations=7)
    assert (out.iterations == 7).all() and np.isfinite(out.trace).all()
    assert seen["opticam_step"] == [len(tiny_images)] * 7
