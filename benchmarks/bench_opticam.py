"""Opti-CAM end to end: ONNX Runtime (fused and split pipelines, every installed ORT backend)
against the PyTorch reference, same photos and iterations, measured side by side in one run.

Run: ``python -m pytest benchmarks/bench_opticam.py --benchmark-only``

* Model: EfficientNet-Lite0 at 224x224 (tap ``_swish@1``, K = 1280); images: the sample photos
  (mirrored to fill batch 8). Fixtures and environment variables: benchmarks/conftest.py.
* One round = one ``Explainer.explain(..., "opti-cam", iterations=ITERS)`` call: the forward
  pass, ITERS optimisation steps and the masked forward pass. ITERS defaults to the paper's 100
  ($OPTICAM_RT_BENCH_ITERS overrides); 3 rounds ($OPTICAM_RT_BENCH_ROUNDS).
* ``per_iteration_ms`` (median / ITERS) is stored in each benchmark's ``extra_info``; the final
  table gives the torch / this ratio.
"""

from __future__ import annotations

import os

import pytest
from conftest import BATCHES, bench_backends, record

ITERS = int(os.environ.get("OPTICAM_RT_BENCH_ITERS", "100"))
ROUNDS = int(os.environ.get("OPTICAM_RT_BENCH_ROUNDS", "3"))
IMPLS = [f"{b}-{p}" for b in bench_backends() if b != "torch" for p in ("fused", "split")] + ["torch"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n", BATCHES, ids=[f"b{n}" for n in BATCHES])
def test_opticam(benchmark, explainers, photo_batch, n, impl):
    benchmark.group = f"opticam-b{n}"
    batch = photo_batch[:n]
    backend, _, pipeline = impl.rpartition("-") if impl != "torch" else ("torch", "", "")
    explainer = explainers[backend]
    options = {"pipeline": pipeline} if pipeline else {}

    def run():
        return explainer.explain(batch, "opti-cam", iterations=ITERS, **options)

    out = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert out.maps.shape == (n, *batch.shape[2:]) and (out.iterations == ITERS).all()
    median = record(benchmark, "opti-cam", f"{ITERS} iterations", n, impl)
    benchmark.extra_info.update(per_iteration_ms=median / ITERS * 1e3, per_image_iteration_ms=median / ITERS / n * 1e3)
