"""`opticam-rt bench` and the ratio regression gate, on a tiny bundle."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from opticam_rt.bench import BenchRow, compare_to_baseline, run_benchmarks
from opticam_rt.cli import cli
from opticam_rt.export import export_bundle
from opticam_rt.runtime.ort_runner import OrtRunner

NETS = Path(__file__).parent / "nets.py"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.nets import TINY_NETS

    net = TINY_NETS["conv"]
    out = tmp_path_factory.mktemp("bench") / "conv"
    export_bundle(
        net.build(), out, tap=net.tap, input_size=net.input_size, mean=net.mean, std=net.std,
        model_spec=f"{NETS}:{net.build.__name__}", verify=False,
    )
    return out


def test_rows_have_medians_and_ratios(tiny_bundle: Path) -> None:
    images = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    rows = run_benchmarks(tiny_bundle, ["floor-forward", "grad-cam", "opti-cam"], ["ort-cpu"], [1, 2], images,
                          repeat=2, method_options={"opti-cam": {"iterations": 3}})
    keys = {(r.method, r.backend, r.batch) for r in rows}
    assert keys == {(m, b, n) for m in ("floor-forward", "grad-cam", "opti-cam") for b in ("ort-cpu", "torch") for n in (1, 2)}
    for r in rows:
        assert r.median_s > 0 and r.runs == 2
        assert r.ratio_vs_torch is not None
        if r.backend == "torch":
            assert r.ratio_vs_torch == pytest.approx(1.0)
    opti = next(r for r in rows if r.method == "opti-cam" and r.backend == "ort-cpu" and r.batch == 1)
    assert opti.per_iteration_s == pytest.approx(opti.median_s / 3)


def test_gate_compares_ratios_not_times() -> None:
    base = [{"method": "opti-cam", "backend": "ort-cpu", "batch": 1, "ratio_vs_torch": 2.0}]
    slower_machine = [BenchRow("opti-cam", "ort-cpu", 1, median_s=9.0, runs=3, ratio_vs_torch=1.9)]
    regressed = [BenchRow("opti-cam", "ort-cpu", 1, median_s=0.1, runs=3, ratio_vs_torch=1.5)]
    assert compare_to_baseline(slower_machine, base, 0.15) == []
    found = compare_to_baseline(regressed, base, 0.15)
    assert len(found) == 1 and found[0].change == pytest.approx(-0.25)


def test_gate_fails_on_a_deliberately_slowed_runner(tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    baseline = tmp_path / "baseline.json"
    args = ["bench", "--bundle", str(tiny_bundle), "--methods", "grad-cam", "--backends", "ort-cpu", "--repeat", "3"]
    first = runner.invoke(cli, [*args, "--save-baseline", str(baseline), "--format", "json"], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    saved = json.loads(baseline.read_text())
    assert {"method", "backend", "batch", "median_s", "ratio_vs_torch"} <= set(saved[0])

    # The "slowed change": every ONNX Runtime call now also sleeps, so the ratio to torch drops.
    original = OrtRunner.infer_impl
    torch_median = next(r["median_s"] for r in saved if r["backend"] == "torch")

    def slowed(self: OrtRunner, graph: str, feeds: dict) -> dict:
        time.sleep(torch_median)
        return original(self, graph, feeds)

    monkeypatch.setattr(OrtRunner, "infer_impl", slowed)
    second = runner.invoke(cli, [*args, "--baseline", str(baseline), "--threshold", "0.3"])
    assert second.exit_code == 1
    assert "REGRESSION grad-cam ort-cpu b1" in second.output


def test_bad_baseline_file_is_named(tiny_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(cli, ["bench", "--bundle", str(tiny_bundle), "--baseline", str(bad)])
    assert result.exit_code != 0
    assert "bad.json" in str(result.exception)


def test_floors_are_timed_in_bursts(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A floor sample is FLOOR_BURST back-to-back calls, reported per call (steady state)."""
    from opticam_rt.bench import FLOOR_BURST

    calls: list[str] = []
    original = OrtRunner.infer_impl

    def counted(self: OrtRunner, graph: str, feeds: dict) -> dict:
        calls.append(graph)
        return original(self, graph, feeds)

    monkeypatch.setattr(OrtRunner, "infer_impl", counted)
    images = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    rows = run_benchmarks(tiny_bundle, ["floor-grad"], ["ort-cpu"], [1], images, repeat=2)
    assert calls.count("grad_image") == 1 + 2 * FLOOR_BURST  # warm-up, then 2 bursts
    ort_row = next(r for r in rows if r.backend == "ort-cpu")
    assert ort_row.runs == 2 and ort_row.median_s < 1.0


def test_auto_is_the_resolver_explain_uses() -> None:
    from opticam_rt.bench import backend_plan
    from opticam_rt.runtime.runners import resolve_backend

    methods = ["floor-forward", "floor-grad", "grad-cam", "score-cam", "opti-cam"]
    plan = backend_plan(methods, ["auto"])
    for method in ("grad-cam", "score-cam", "opti-cam"):
        assert plan[method] == [resolve_backend("auto", method)]
    # the floors run wherever a method runs, so every loop overhead has its floor
    chosen = {b for m in ("grad-cam", "score-cam", "opti-cam") for b in plan[m]}
    assert set(plan["floor-grad"]) == chosen == set(plan["floor-forward"])


def test_bench_auto_times_grad_cam_where_explain_runs_it(tiny_bundle: Path) -> None:
    from opticam_rt.runtime.runners import resolve_backend

    images = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    rows = run_benchmarks(tiny_bundle, ["grad-cam"], ["auto"], [1], images, repeat=1)
    assert {r.backend for r in rows} == {resolve_backend("auto", "grad-cam"), "torch"}
