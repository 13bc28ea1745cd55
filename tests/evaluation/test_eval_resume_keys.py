"""Issue 13, defect 1: `evaluate` reuses saved records only when the same settings produced them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from opticam_rt.cli import cli
from opticam_rt.evaluation.records import RecordStore


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (36, 30, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def evaluate(bundle_dir: str, data: Path, records: Path, *extra: str) -> list[dict]:
    args = ["evaluate", str(data), "--bundle", bundle_dir, "--methods", "grad-cam,opti-cam", "--metrics", "ad,ai,insertion",
            "--iterations", "2", "--steps", "4", "--records", str(records), "--format", "json", *extra]  # fmt: skip
    # later options win in click, so `extra` overrides the defaults above
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return RecordStore(records).records()


def by_method(records: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["method"]] = counts.get(r["method"], 0) + 1
    return counts


def test_records_are_reused_only_for_the_same_settings(bundle_dir, data, tmp_path) -> None:
    records = tmp_path / "r.jsonl"
    first = evaluate(bundle_dir, data, records)
    assert by_method(first) == {"grad-cam": 2, "opti-cam": 2}
    key = first[-1]["produced_by"]
    assert key["method"] == "opti-cam" and key["options"]["iterations"] == 2 and key["metrics"]["steps"] == 4
    assert len(key["bundle_sha256"]) == 64 and key["backend"] and key["opticam_rt"]
    # the same command again: everything reused
    assert by_method(evaluate(bundle_dir, data, records)) == {"grad-cam": 2, "opti-cam": 2}
    # another Opti-CAM option: only Opti-CAM is redone
    assert by_method(evaluate(bundle_dir, data, records, "--iterations", "3")) == {"grad-cam": 2, "opti-cam": 4}
    # other metric settings: both redone
    assert by_method(evaluate(bundle_dir, data, records, "--steps", "6")) == {"grad-cam": 4, "opti-cam": 6}


def test_records_of_another_bundle_are_not_reused(bundle_dir, data, tmp_path) -> None:
    records = tmp_path / "r.jsonl"
    evaluate(bundle_dir, data, records)
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    for r in lines:
        r["produced_by"]["bundle_sha256"] = "0" * 64
        r["AD"] = 12345.0  # a number the tiny net cannot give
    records.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "report.json"
    evaluate(bundle_dir, data, records, "--out", str(out))
    assert "12345" not in out.read_text()
    assert json.loads(out.read_text())  # a real report came out


def test_plot_after_runs_with_other_step_counts(bundle_dir, data, tmp_path) -> None:
    """Mixed step counts in one records file crashed --plot (inhomogeneous shape)."""
    records = tmp_path / "r.jsonl"
    later = tmp_path / "b.png"
    (data / "b.png").rename(later)
    evaluate(bundle_dir, data, records, "--steps", "4")  # image a only
    later.rename(data / "b.png")
    evaluate(bundle_dir, data, records, "--steps", "6", "--plot", str(tmp_path / "curves.png"))
    with Image.open(tmp_path / "curves.png") as img:
        assert img.format == "PNG"


def test_existing_report_is_not_overwritten(bundle_dir, data, tmp_path) -> None:
    out = tmp_path / "report.txt"
    out.write_text("an earlier report")
    result = CliRunner().invoke(cli, ["evaluate", str(data), "--bundle", bundle_dir, "--methods", "grad-cam",
                                      "--records", str(tmp_path / "r.jsonl"), "--out", str(out)])  # fmt: skip
    assert result.exit_code != 0 and "--overwrite" in str(result.exception)
    assert out.read_text() == "an earlier report" and not (tmp_path / "r.jsonl").exists()  # refused before any work


def test_unwritable_report_path_is_refused_before_any_work(bundle_dir, data, tmp_path) -> None:
    """Defect 4 for evaluate: a report that cannot be written is refused up front, not after the run."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    records = tmp_path / "r.jsonl"
    result = CliRunner().invoke(cli, ["evaluate", str(data), "--bundle", bundle_dir, "--methods", "grad-cam",
                                      "--records", str(records), "--out", str(blocker / "report.txt")])  # fmt: skip
    assert result.exit_code != 0 and "--out" in str(result.exception) and "cannot write" in str(result.exception)
    assert not records.exists()


def test_default_records_go_to_the_cache_not_the_current_folder(bundle_dir, data, tmp_path, monkeypatch) -> None:
    """Without --records or --out, nothing is written where the user happens to stand; a rerun on
    the same inputs finds the same records file (and reuses it)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("OPTICAM_RT_CACHE", str(tmp_path / "cache"))
    args = ["evaluate", str(data), "--bundle", bundle_dir, "--methods", "grad-cam", "--metrics", "ad", "--format", "json"]
    for _ in range(2):
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert list(cwd.iterdir()) == []
    (records,) = (tmp_path / "cache" / "records").iterdir()
    assert records.name.startswith("eval-") and str(records) in result.stderr
    assert len(RecordStore(records).records()) == 2  # the second run reused both images' records
