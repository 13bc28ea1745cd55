"""Images per second of ``explain`` in one process against ``explain --ray`` (a local Ray instance
on this machine), Grad-CAM and Opti-CAM, same files, same batches, outputs written in both.

Run: ``python -m pytest benchmarks/bench_scale.py --benchmark-only`` (needs opticam-rt[ray]).

* Model: EfficientNet-Lite0 (``$OPTICAM_RT_BENCH_BUNDLE`` or exported once, benchmarks/conftest.py);
  images: the sample photos as PNG files, repeated to $OPTICAM_RT_BENCH_SCALE_IMAGES (default 32),
  batch $OPTICAM_RT_BENCH_SCALE_BATCH (default 8). Opti-CAM runs $OPTICAM_RT_BENCH_SCALE_ITERS
  steps (default 20).
* Backends: $OPTICAM_RT_BENCH_SCALE_BACKENDS (default ``ort-cpu,auto``): ONNX Runtime, and what a
  user gets without ``--backend`` (``auto``: OpenVINO for both methods on a CPU machine).
* ``single``: ``runtime.files.explain_files`` with one Explainer (default threads: all cores).
  ``ray``: ``scale.explain_files_on_ray`` on a pool of one actor per core (1 CPU, 1 thread
  each), started once before timing: Ray's start-up (4-20 s, paid once per run) is reported
  separately as ``ray_startup_s``, not in the rate. Each actor is warmed up on one batch first
  (sessions made, OpenVINO's per-shape compile done), as the single process is.
* Ray's own overhead (shipping files and maps, scheduling, the driver writing outputs) is
  ``ray-1actor`` against ``single-1t``: one actor against one process, one thread each.
* ``images_per_s`` and, for Ray, ``images_per_s_per_actor`` go to each benchmark's extra_info;
  the final medians table (benchmarks/conftest.py) has ``single`` and ``ray`` side by side
  (seconds per run of all images). $OPTICAM_RT_BENCH_ROUNDS rounds (default 3).
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import pytest
from conftest import record

IMAGES = int(os.environ.get("OPTICAM_RT_BENCH_SCALE_IMAGES", "32"))
BATCH = int(os.environ.get("OPTICAM_RT_BENCH_SCALE_BATCH", "8"))
ITERS = int(os.environ.get("OPTICAM_RT_BENCH_SCALE_ITERS", "20"))
ROUNDS = int(os.environ.get("OPTICAM_RT_BENCH_ROUNDS", "3"))
CASES = {"grad-cam": {}, "opti-cam": {"iterations": ITERS}}
BACKENDS = [b.strip() for b in os.environ.get("OPTICAM_RT_BENCH_SCALE_BACKENDS", "ort-cpu,auto").split(",")
            if b.strip()]

@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[str]:
    """IMAGES PNG files: the sample photos (extended set), repeated."""
    from opticam_rt.images import write_sample_photos

    written = write_sample_photos(tmp_path_factory.mktemp("scale-bench"), extended=True)
    if not written:
        pytest.skip("needs scikit-image's sample photos")
    return [str(written[i % len(written)]) for i in range(IMAGES)]


@pytest.fixture(scope="module", params=[(b, a) for b in BACKENDS for a in (None, 1)],
                ids=[f"{b}-{'ray' if a is None else 'ray-1actor'}" for b in BACKENDS for a in (None, 1)])
def ray_pool(request, effnet_bundle):
    """A local Ray instance with one actor per core (``ray``) or one actor (``ray-1actor``) on one
    backend, started (and its start-up timed) before the runs."""
    pytest.importorskip("ray", reason="needs opticam-rt[ray]")
    from opticam_rt.scale import RayBatchExecutor, RayConfig

    backend, actors = request.param
    start = time.perf_counter()
    config = RayConfig(actors=actors, backend=backend, cpus_per_actor=1)
    with RayBatchExecutor(effnet_bundle.path, config) as pool:
        impl = "ray" if actors is None else "ray-1actor"
        yield SimpleNamespace(executor=pool, impl=impl, backend=backend, startup_s=time.perf_counter() - start)


@pytest.mark.parametrize("threads", [None, 1], ids=["single", "single-1t"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", list(CASES))
def test_single_process(benchmark, effnet_bundle, image_files, tmp_path, method, backend, threads):
    from opticam_rt.runtime import Explainer
    from opticam_rt.runtime.files import explain_files

    benchmark.group = f"scale-{method}-{backend}"
    with Explainer(effnet_bundle, backend=backend, threads=threads) as explainer:
        explain_files(explainer, image_files[:BATCH], method, batch_size=BATCH, **CASES[method])  # warm-up

        def run():
            return explain_files(explainer, image_files, method, batch_size=BATCH, out_dir=tmp_path, overwrite=True,
                                 **CASES[method])

        results = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert all(r.error is None for r in results) and len(results) == IMAGES
    rate = IMAGES / benchmark.stats.stats.median
    benchmark.extra_info.update(images=IMAGES, batch=BATCH, iterations=ITERS, images_per_s=rate)
    record(benchmark, "scale", f"{method}/{backend}", BATCH, "single" if threads is None else "single-1t")


@pytest.mark.parametrize("method", list(CASES))
def test_ray(benchmark, ray_pool, effnet_bundle, image_files, tmp_path, method):
    from opticam_rt.scale import explain_files_on_ray

    benchmark.group = f"scale-{method}-{ray_pool.backend}"
    actors = len(ray_pool.executor.actors)
    warm = image_files[: BATCH * actors]  # one batch per actor (each idle actor gets one)
    explain_files_on_ray(effnet_bundle.path, warm, method, batch_size=BATCH, executor=ray_pool.executor, **CASES[method])

    def run():
        return explain_files_on_ray(effnet_bundle.path, image_files, method, batch_size=BATCH, out_dir=tmp_path,
                                    executor=ray_pool.executor, overwrite=True, **CASES[method])

    results = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert all(r.error is None for r in results) and len(results) == IMAGES
    rate = IMAGES / benchmark.stats.stats.median
    benchmark.extra_info.update(images=IMAGES, batch=BATCH, iterations=ITERS, images_per_s=rate, actors=actors,
                                images_per_s_per_actor=rate / actors, ray_startup_s=ray_pool.startup_s)
    record(benchmark, "scale", f"{method}/{ray_pool.backend}", BATCH, ray_pool.impl)
