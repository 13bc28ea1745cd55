"""Fixtures shared by the latency suites: the EfficientNet-Lite0 bundle, sample photos, threads,
and a side-by-side summary (median and ratio to PyTorch) printed at the end of the run.

Environment:
    OPTICAM_RT_BENCH_BUNDLE   an exported bundle to use instead of exporting one (~75 s).
    OPTICAM_RT_BENCH_THREADS  threads for PyTorch and ONNX Runtime; 0 (default) keeps each
                              library's default (all cores), as ``opticam-rt bench`` does.
    OPTICAM_RT_BENCH_BATCHES  comma-separated batch sizes (default 1,8).
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import pytest

THREADS = int(os.environ.get("OPTICAM_RT_BENCH_THREADS", "0"))
BATCHES = [int(b) for b in os.environ.get("OPTICAM_RT_BENCH_BATCHES", "1,8").split(",") if b.strip()]

#: (suite, case, batch) -> {implementation: median seconds}, filled by ``record`` and printed
#: at the end of the session with the ratio of the ``torch`` entry to each other entry.
_MEDIANS: dict[tuple[str, str, int], dict[str, float]] = defaultdict(dict)


def record(benchmark, suite: str, case: str, batch: int, impl: str, calls: int = 1) -> float:
    """Store the benchmark's median per call (a round made ``calls`` calls) under (suite, case,
    batch) for the final table; returns it."""
    median = benchmark.stats.stats.median / calls
    _MEDIANS[(suite, case, batch)][impl] = median
    benchmark.extra_info.update(
        suite=suite, case=case, batch=batch, impl=impl, seconds_per_call=median, threads=THREADS or "default"
    )
    return median


def pytest_terminal_summary(terminalreporter) -> None:
    if not _MEDIANS:
        return
    write = terminalreporter.write_line
    write("")
    write(f"medians side by side (threads={THREADS or 'default'}); torch/this > 1 means faster than PyTorch eager")
    write(f"{'suite':<10} {'case':<16} {'batch':>5} {'impl':<12} {'median s':>10} {'torch/this':>10}")
    for (suite, case, batch), impls in sorted(_MEDIANS.items()):
        ref = impls.get("torch")
        for impl, median in sorted(impls.items()):
            ratio = f"{ref / median:10.2f}" if ref else f"{'-':>10}"
            write(f"{suite:<10} {case:<16} {batch:>5} {impl:<12} {median:10.4f} {ratio}")


@pytest.fixture(scope="session", autouse=True)
def torch_threads():
    """Apply OPTICAM_RT_BENCH_THREADS to PyTorch for the whole run."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    if THREADS:
        torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def effnet_bundle(tmp_path_factory: pytest.TempPathFactory):
    """The EfficientNet-Lite0 bundle (exported once, verify=False) or $OPTICAM_RT_BENCH_BUNDLE."""
    from opticam_rt.bundle import load_bundle

    given = os.environ.get("OPTICAM_RT_BENCH_BUNDLE")
    if given:
        return load_bundle(given)
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs opticam-rt[all]")
    from opticam_rt.export import export_bundle, load_recipe

    r = load_recipe("efficientnet-lite0")
    out = tmp_path_factory.mktemp("bench") / "efficientnet-lite0"
    bundle, _ = export_bundle(
        r.build(), out, tap=r.tap, input_size=r.input_size, mean=r.mean, std=r.std,
        class_names=r.class_names, model_name=r.name, model_spec="efficientnet-lite0", verify=False,
    )  # fmt: skip
    return bundle


@pytest.fixture(scope="session")
def photo_batch(effnet_bundle) -> np.ndarray:
    """(max(BATCHES), 3, 224, 224) pixels in [0, 1]: the sample photos, mirrored to fill the batch."""
    from opticam_rt.images import sample_photos, to_model_input

    photos = list(sample_photos().values())
    if not photos:
        pytest.skip("needs scikit-image's sample photos")
    size = tuple(effnet_bundle.manifest.input_size)
    base = [to_model_input(p, size) for p in photos]
    pool = base + [b[:, :, ::-1] for b in base]
    n = max(BATCHES)
    return np.ascontiguousarray(np.stack([pool[i % len(pool)] for i in range(n)]))


def bench_backends() -> list[str]:
    """Every backend installed here (ONNX Runtime providers, then torch), best first."""
    from opticam_rt.runtime import available_backends

    return available_backends()


@pytest.fixture(scope="session")
def explainers(effnet_bundle, photo_batch):
    """backend name -> Explainer over the same bundle, for every installed backend, warmed up at
    every batch size: sessions created, and OpenVINO's per-shape compilation done (a service
    compiles once; the suites time the steady state), including the chunk shapes of Score-CAM's
    forward and Ablation-CAM's head."""
    from opticam_rt.runtime import Explainer
    from opticam_rt.methods.ablation_cam import AblationCAMOptions
    from opticam_rt.methods.score_cam import ScoreCAMOptions

    made = {}
    k = effnet_bundle.manifest.tap_shape
    for backend in bench_backends():
        kwargs = {"threads": THREADS} if THREADS and backend != "torch" else {}
        made[backend] = Explainer(effnet_bundle, backend=backend, **kwargs)
        for n in BATCHES:
            for pipeline in ("fused", "split") if backend != "torch" else ("fused",):
                made[backend].explain(photo_batch[:n], "opti-cam", iterations=1, pipeline=pipeline)
            made[backend].explain(photo_batch[:n], "grad-cam")
        if backend != "torch":
            runner = made[backend].runner
            runner.infer("forward", {"image": np.resize(photo_batch, (ScoreCAMOptions().chunk, *photo_batch.shape[1:]))})
            runner.infer("head", {"features": np.zeros((AblationCAMOptions().chunk, *k), dtype=np.float32)})
    yield made
    for explainer in made.values():
        explainer.close()
