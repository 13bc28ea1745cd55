"""Every saliency method x every installed backend x batch 1 and 8 on EfficientNet-Lite0, against
the PyTorch reference, plus the floor: the bare network's forward, and forward + image gradient.

Run: ``python -m pytest benchmarks/bench_methods.py --benchmark-only``
(a full run takes ~40 min on 2 cores: Score-CAM and Ablation-CAM run 1280 masked passes per image;
narrow it with ``-k``, e.g. ``-k "opti-cam or floor"``, or OPTICAM_RT_BENCH_BATCHES=1).

* One round = one ``Explainer.explain`` call (Opti-CAM: the paper's 100 iterations) or, for the
  floors, ``FLOOR_BURST`` back-to-back calls timed together (seconds per call reported), as
  ``opticam-rt bench`` measures them: the same library code times both.
* Cases sharing a group (``grad-cam-b1``, ...) are printed side by side by pytest-benchmark, and
  a final table gives each median with its ratio to the ``torch`` entry.
"""

from __future__ import annotations

import pytest
from conftest import BATCHES, bench_backends, record

from opticam_rt.bench import FLOOR_BURST, FLOORS, floor_fn
from opticam_rt.methods import REGISTRY

#: Methods whose reference takes minutes per image: one round each.
SLOW = {"score-cam", "ablation-cam"}
ROUNDS = 3


@pytest.mark.parametrize("backend", bench_backends())
@pytest.mark.parametrize("n", BATCHES, ids=[f"b{n}" for n in BATCHES])
@pytest.mark.parametrize("case", [*FLOORS, *REGISTRY])
def test_method(benchmark, explainers, photo_batch, case, n, backend):
    benchmark.group = f"{case}-b{n}"
    explainer, batch = explainers[backend], photo_batch[:n]
    if case in FLOORS:
        floor = floor_fn(explainer, case)

        def run():
            for _ in range(FLOOR_BURST):
                out = floor(batch)
            return out

        benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
        record(benchmark, "methods", case, n, backend, calls=FLOOR_BURST)
        return

    def explain():
        return explainer.explain(batch, method=case)

    rounds = 1 if case in SLOW else ROUNDS
    out = benchmark.pedantic(explain, rounds=rounds, iterations=1, warmup_rounds=0)
    assert out.maps.shape == (n, *batch.shape[2:])
    record(benchmark, "methods", case, n, backend)
