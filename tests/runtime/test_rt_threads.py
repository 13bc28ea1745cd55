"""One Explainer shared by several threads: each call gets the result it would get alone.

Before runners were made thread-safe, 6 threads sharing one tiny-net Explainer got wrong Opti-CAM
maps without an error on ``ov-cpu`` (its one infer request per compiled graph overwrote another
thread's outputs; on EfficientNet-Lite0 24 of 32 Grad-CAM calls raised "Infer Request is busy"),
and wrong maps plus autograd errors on ``torch`` (per-call forward hooks on one shared module).

Each test builds a fresh Explainer for the threads, so the lazily created runners, sessions and
compiled graphs are first used concurrently too; the expected values come from a second Explainer
used by one thread. Same kernels on the same batch with one intra-op thread: exactly equal.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

THREADS = 6
CALLS_PER_THREAD = 5
#: (method, options): a backward-graph method, the iterative one, and a forward-only one.
CASES = [("grad-cam", {}), ("opti-cam", {"iterations": 5}), ("score-cam", {})]
#: backend -> engine; ``graph`` runs the self-contained explainer graphs under ONNX Runtime.
BACKENDS = [("ort-cpu", "host"), ("ov-cpu", "host"), ("torch", "host"), ("ort-cpu", "graph")]


def _batches(tiny_images: np.ndarray) -> list[np.ndarray]:
    """Batches of 1, 2, 3 and 4 images (distinct batch sizes: OpenVINO compiles one model each)."""
    rng = np.random.default_rng(7)
    noisy = np.clip(tiny_images + rng.normal(0, 0.05, tiny_images.shape).astype(np.float32), 0, 1)
    return [tiny_images[:1], noisy[:2], tiny_images[1:4], noisy]


def _run_threads(work, n: int) -> list[BaseException]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - collected and reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return errors


@pytest.mark.parametrize("backend,engine", BACKENDS, ids=[f"{b}-{e}" for b, e in BACKENDS])
@pytest.mark.parametrize("method,options", CASES, ids=[m for m, _ in CASES])
def test_shared_explainer_matches_single_threaded(backend, engine, method, options, tiny_bundle, tiny_images):
    if backend == "ov-cpu":
        pytest.importorskip("openvino", reason="backend ov-cpu needs openvino")
    from opticam_rt.runtime import Explainer

    batches = _batches(tiny_images)
    with Explainer(tiny_bundle, backend=backend, threads=1, engine=engine) as alone:
        expected = [alone.explain(b, method=method, **options) for b in batches]

    got: dict[tuple[int, int], object] = {}
    with Explainer(tiny_bundle, backend=backend, threads=1, engine=engine) as shared:

        def work(i: int) -> None:
            for k in range(CALLS_PER_THREAD):
                j = (i + k) % len(batches)
                got[i, k] = (j, shared.explain(batches[j], method=method, **options))

        errors = _run_threads(work, THREADS)
    assert not errors, f"{len(errors)} calls failed, e.g. {errors[0]!r}"
    assert len(got) == THREADS * CALLS_PER_THREAD
    for (i, k), (j, out) in got.items():
        want = expected[j]
        where = f"thread {i} call {k} (batch {j})"
        np.testing.assert_array_equal(out.maps, want.maps, err_msg=where)
        np.testing.assert_array_equal(out.targets, want.targets, err_msg=where)
        np.testing.assert_array_equal(out.scores, want.scores, err_msg=where)
        np.testing.assert_array_equal(out.masked_scores, want.masked_scores, err_msg=where)
        assert out.backend == want.backend == backend


@pytest.mark.parametrize("backend", ["ort-cpu", "ov-cpu", "torch"])
def test_shared_runner_graph_calls(backend, tiny_bundle, tiny_images):
    """The runner contract itself: concurrent ``infer`` on one runner, every graph of a method's
    loop, with distinct batch sizes racing on first use."""
    if backend == "ov-cpu":
        pytest.importorskip("openvino", reason="backend ov-cpu needs openvino")
    from opticam_rt.runtime import create_runner

    batches = _batches(tiny_images)
    rng = np.random.default_rng(3)
    feeds = []
    for b in batches:
        cot = np.eye(7, dtype=np.float32)[rng.integers(0, 7, len(b))]
        feeds.append(("grad_features", {"image": b, "cotangent": cot}))
        feeds.append(("forward", {"image": b}))
    with create_runner(backend, tiny_bundle, threads=1) as alone:
        expected = [alone.infer(g, f) for g, f in feeds]
    with create_runner(backend, tiny_bundle, threads=1) as shared:
        got = {}

        def work(i: int) -> None:
            for k in range(2 * len(feeds)):
                j = (i * 3 + k) % len(feeds)
                got[i, k] = (j, shared.infer(*feeds[j]))

        errors = _run_threads(work, THREADS)
    assert not errors, f"{len(errors)} calls failed, e.g. {errors[0]!r}"
    for (i, k), (j, out) in got.items():
        assert out.keys() == expected[j].keys()
        for name in out:
            np.testing.assert_array_equal(out[name], expected[j][name], err_msg=f"thread {i} call {k} {feeds[j][0]} {name}")
