"""``evaluate --ray`` and ``explain --ray`` on a real local Ray cluster give the single-process
results; a dying actor loses only its batches, which are retried; a run resumes from its records."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from opticam_rt.cli import cli
from opticam_rt.errors import BackendUnavailableError, InputError
from opticam_rt.scale.ray_executor import ExplainerWorker

EVALUATE = ["--methods", "grad-cam,opti-cam", "--iterations", "5", "--steps", "8", "--batch-size", "2",
            "--backend", "ort-cpu", "--format", "csv"]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _settings():
    from opticam_rt.evaluation.runner import EvaluationSettings

    return EvaluationSettings(steps=8, batch_size=2, method_options={"opti-cam": {"iterations": 5}, "grad-cam": {}})


METHODS = ["grad-cam", "opti-cam"]
METRICS = ["ad", "ai", "ag", "insertion"]


def _keys(bundle_dir: str) -> dict[str, dict]:
    """What produces each method's records in these runs (the driver computes it in the CLI)."""
    from opticam_rt.evaluation.runner import run_key
    from opticam_rt.runtime import Explainer

    with Explainer(bundle_dir, backend="ort-cpu") as explainer:
        return {m: run_key(explainer, m, METRICS, _settings()) for m in METHODS}


def _samples(photo_dir: Path):
    from opticam_rt.evaluation import load_samples

    return load_samples(photo_dir, None)


@pytest.fixture(scope="module")
def single_process(bundle_dir: str, photo_dir: Path, tmp_path_factory) -> list[dict]:
    """The library's single-process records for the photos (grad-cam, opti-cam)."""
    from opticam_rt.evaluation import RecordStore
    from opticam_rt.evaluation.runner import evaluate_dataset
    from opticam_rt.runtime import Explainer

    store = RecordStore(tmp_path_factory.mktemp("single") / "records.jsonl")
    errors = []
    with Explainer(bundle_dir, backend="ort-cpu") as explainer:
        records = evaluate_dataset(explainer, _samples(photo_dir), ["grad-cam", "opti-cam"], ["ad", "ai", "ag", "insertion"],
                                   store, _settings(), on_error=lambda image, message: errors.append(image))
    assert sorted(set(errors)) == [str(photo_dir / "broken.png")]
    assert len(records) == 2 * (len(_samples(photo_dir)) - 1)
    return records


def test_cli_evaluate_ray_matches_single_process(ray_cluster, bundle_dir, photo_dir, tmp_path, same_records) -> None:
    runner = CliRunner()
    outcome = {}
    for name, extra in (("single", []), ("ray", ["--ray", "--ray-actors", "2"])):
        args = ["evaluate", str(photo_dir), "--bundle", bundle_dir, *EVALUATE, "--out", str(tmp_path / f"{name}.csv"), *extra]
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 1, result.output  # broken.png is reported, the others evaluated
        assert "broken.png" in result.stderr
        outcome[name] = result
    same_records(_records(tmp_path / "ray.csv.records.jsonl"), _records(tmp_path / "single.csv.records.jsonl"))
    # The report: the same rows; means equal to rounding (records arrive in another order)
    got, want = ([row for row in csv.reader((tmp_path / f"{name}.csv").read_text().splitlines()) if row]
                 for name in ("ray", "single"))
    assert [row[0] for row in got] == [row[0] for row in want] and got[0] == want[0]
    for row_got, row_want in zip(got[1:], want[1:]):
        np.testing.assert_allclose([float(v) for v in row_got[1:]], [float(v) for v in row_want[1:]], rtol=1e-12)
    assert ray_cluster.is_initialized(), "a run joining the test's Ray instance must leave it running"


def test_dying_actor_loses_only_its_batches(ray_cluster, ray_config, bundle_dir, photo_dir, single_process, tmp_path,
                                            same_records) -> None:
    """One actor process exits in the middle of its first batch (as on a crash or an OOM kill):
    its batches are run again on a replacement actor, every image is counted exactly once."""
    from opticam_rt.evaluation import RecordStore
    from opticam_rt.scale import RayBatchExecutor, evaluate_dataset_on_ray

    flag = tmp_path / "died-once"
    # The Ray workers cannot import this test module; ship the worker class by value.
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    config = ray_config(max_retries=2)
    store = RecordStore(tmp_path / "records.jsonl")
    done: list[int] = []
    with RayBatchExecutor(bundle_dir, config, worker=_dies_once(str(flag))) as executor:
        records = evaluate_dataset_on_ray(bundle_dir, _samples(photo_dir), ["grad-cam", "opti-cam"],
                                          ["ad", "ai", "ag", "insertion"], store, _settings(),
                                          on_error=lambda *_: None, progress=done.append, executor=executor,
                                          run_keys=_keys(bundle_dir))
        stats = executor.stats
    assert flag.exists(), "the fault was never injected"
    assert 1 <= stats.retries <= 2, stats  # the batch it was running, and the one queued behind it
    assert stats.actors_started == 3, stats  # two, and one replacement
    assert sum(done) == 2 * len(_samples(photo_dir)), "each batch must be reported done exactly once"
    same_records(records, single_process)


def _dies_once(flag: str) -> type:
    """An ExplainerWorker whose process exits in the middle of the first batch any actor runs."""

    class DiesOnce(ExplainerWorker):
        def evaluate(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            try:
                with open(flag, "x"):
                    pass
            except FileExistsError:
                return super().evaluate(*args, **kwargs)
            os._exit(1)

    return DiesOnce


def test_batches_are_spread_over_the_actors(ray_cluster, ray_config, bundle_dir) -> None:
    """Two batches on two actors run on both (they once both went to the first actor, which ran
    them one after the other while the second sat idle), four run two on each."""
    from opticam_rt.scale import RayBatchExecutor

    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with RayBatchExecutor(bundle_dir, ray_config(actors=2), worker=_SaysWho) as executor:
        for count in (2, 4):
            who: dict[int, int] = {}
            executor.run(count, lambda i: ("who", ()), lambda i, pid: who.__setitem__(i, pid))
            assert sorted(who) == list(range(count))
            pids = list(who.values())
            assert len(set(pids)) == 2 and all(pids.count(p) == count // 2 for p in pids), who


class _SaysWho(ExplainerWorker):
    def who(self) -> int:
        return os.getpid()


def test_stuck_actor_is_killed_and_its_batches_retried(ray_cluster, ray_config, bundle_dir, photo_dir, single_process,
                                                       tmp_path, same_records) -> None:
    """An actor that stops making progress (here: its first batch sleeps) is killed after
    ``batch_timeout_s``, and its batches finish on a replacement."""
    from opticam_rt.evaluation import RecordStore
    from opticam_rt.scale import RayBatchExecutor, evaluate_dataset_on_ray

    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    config = ray_config(batch_timeout_s=3.0, max_retries=2)
    store = RecordStore(tmp_path / "records.jsonl")
    with RayBatchExecutor(bundle_dir, config, worker=_hangs_once(str(tmp_path / "hung-once"))) as executor:
        records = evaluate_dataset_on_ray(bundle_dir, _samples(photo_dir), ["grad-cam", "opti-cam"],
                                          ["ad", "ai", "ag", "insertion"], store, _settings(), executor=executor,
                                          run_keys=_keys(bundle_dir))
        stats = executor.stats
    assert 1 <= stats.retries <= 2 and stats.actors_started == 3, stats
    same_records(records, single_process)


def _hangs_once(flag: str) -> type:
    """An ExplainerWorker whose first batch (of any actor) sleeps far past the test's timeout."""

    class HangsOnce(ExplainerWorker):
        def evaluate(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            try:
                with open(flag, "x"):
                    pass
            except FileExistsError:
                return super().evaluate(*args, **kwargs)
            time.sleep(60)  # killed long before; bounded all the same
            return super().evaluate(*args, **kwargs)

    return HangsOnce


def test_resume_runs_only_what_the_records_lack(ray_cluster, ray_config, photo_dir, bundle_dir, single_process, tmp_path,
                                                same_records) -> None:
    from opticam_rt.evaluation import RecordStore
    from opticam_rt.scale import evaluate_dataset_on_ray

    store = RecordStore(tmp_path / "records.jsonl")
    for record in single_process:
        if record["method"] == "grad-cam":
            store.append(record)  # an interrupted run: grad-cam done, opti-cam not started
    done: list[int] = []
    records = evaluate_dataset_on_ray(bundle_dir, _samples(photo_dir), ["grad-cam", "opti-cam"],
                                      ["ad", "ai", "ag", "insertion"], store, _settings(), ray_config(),
                                      progress=done.append, run_keys=_keys(bundle_dir))
    # opti-cam's images, and broken.png again for grad-cam (a failed image has no record, so a
    # resumed run tries it again, as a single process does)
    assert sum(done) == len(_samples(photo_dir)) + 1
    same_records(records, single_process)


def test_cli_explain_ray_writes_what_a_single_process_writes(ray_cluster, bundle_dir, photo_dir, tmp_path) -> None:
    images = sorted(str(p) for p in photo_dir.iterdir())
    runner = CliRunner()
    out = {}
    for name, extra in (("single", []), ("ray", ["--ray-actors", "2", "--ray"])):
        args = ["explain", *images, "--bundle", bundle_dir, "--method", "opti-cam", "--iterations", "5",
                "--batch-size", "2", "--backend", "ort-cpu", "--format", "json", "--out", str(tmp_path / name), *extra]
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 1, result.output
        out[name] = json.loads(result.stdout)
    assert [r["image"] for r in out["ray"]] == images
    for got, want in zip(out["ray"], out["single"]):
        assert ("error" in got) == ("error" in want) and got.get("error") == want.get("error")
        if "error" in want:
            continue
        assert Path(got["map"]).name == Path(want["map"]).name
        assert Path(got["overlay"]).name == Path(want["overlay"]).name
        np.testing.assert_allclose(np.load(got["map"]), np.load(want["map"]), atol=1e-6)
        # overlays (encoded by the actor): equal up to one grey level where a map differs by rounding
        got_png, want_png = (np.asarray(Image.open(r["overlay"]), dtype=np.int16) for r in (got, want))
        assert got_png.shape == want_png.shape and np.abs(got_png - want_png).max() <= 1
        for key in ("target", "score", "masked_score", "iterations"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5)


def test_bundle_travels_through_the_object_store_when_its_path_is_not_there(ray_cluster, bundle_dir, tmp_path) -> None:
    from dataclasses import replace

    from opticam_rt.bundle import load_bundle
    from opticam_rt.scale.ray_executor import ship_bundle

    source = ship_bundle(bundle_dir)
    assert source.materialise() == (Path(bundle_dir).resolve(), "path")
    elsewhere = replace(source, path=str(tmp_path / "not-on-this-node"))
    local, how = elsewhere.materialise()
    assert how == "object store" and local != Path(bundle_dir)
    assert load_bundle(local).manifest == load_bundle(bundle_dir).manifest  # hashes checked on load


def test_actor_that_cannot_load_gives_the_one_line_error(ray_cluster, ray_config, bundle_dir) -> None:
    from opticam_rt.scale import RayBatchExecutor

    with pytest.raises(BackendUnavailableError, match="ort-cuda"):
        with RayBatchExecutor(bundle_dir, ray_config(actors=1, backend="ort-cuda")):
            pass


def test_without_ray_the_error_names_the_extra(monkeypatch, bundle_dir, photo_dir) -> None:
    from opticam_rt.scale import RayBatchExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BackendUnavailableError, match=r"opticam-rt\[ray\]"):
        RayBatchExecutor(bundle_dir).__enter__()


@pytest.mark.parametrize("address", ["photo.jpg", "host", "http://host:10001"])
def test_a_path_is_not_taken_for_a_ray_address(address: str) -> None:
    from opticam_rt.scale import RayConfig

    with pytest.raises(InputError, match="not a Ray address"):
        RayConfig(address=address)


def test_importing_the_scale_package_does_not_import_ray() -> None:
    code = "import sys, opticam_rt.scale, opticam_rt.cli.ray_options; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
