"""Issue 21, defect 2: `evaluate` reuses a record only while the image's content, its label and
its boxes are those the record was computed from (records were keyed by the image path alone)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from opticam_rt.cli import cli
from opticam_rt.evaluation.records import RecordStore


def save(path: Path, seed: int) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (36, 30, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, name in enumerate(("a", "b")):
        save(folder / f"{name}.png", i)
    return folder


def run(bundle_dir: str, data: Path, records: Path, *extra: str) -> dict:
    args = ["evaluate", str(data), "--bundle", bundle_dir, "--methods", "grad-cam", "--backend", "ort-cpu",
            "--records", str(records), "--format", "json", *extra]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["grad-cam"]


def test_replaced_image_is_computed_again(bundle_dir, data, tmp_path) -> None:
    records = tmp_path / "r.jsonl"
    before = run(bundle_dir, data, records, "--metrics", "ad")
    assert len(RecordStore(records).records()) == 2
    assert run(bundle_dir, data, records, "--metrics", "ad") == before  # unchanged inputs: reused
    assert len(RecordStore(records).records()) == 2
    save(data / "a.png", 99)  # same path, other photo
    after = run(bundle_dir, data, records, "--metrics", "ad")
    assert len(RecordStore(records).records()) == 3  # a redone, b reused
    fresh = run(bundle_dir, data, tmp_path / "fresh.jsonl", "--metrics", "ad")
    assert after == fresh and after["AD"] != before["AD"]


def test_changed_labels_are_computed_again(bundle_dir, data, tmp_path) -> None:
    csv = tmp_path / "data.csv"
    records = tmp_path / "r.jsonl"
    csv.write_text("path,label\nimages/a.png,3\nimages/b.png,5\n")
    run(bundle_dir, csv, records, "--metrics", "ad")
    csv.write_text("path,label\nimages/a.png,1\nimages/b.png,1\n")
    run(bundle_dir, csv, records, "--metrics", "ad")
    latest = {r["image"]: r["target"] for r in RecordStore(records).records()[2:]}
    assert sorted(latest.values()) == [1, 1]


def test_changed_boxes_are_computed_again(bundle_dir, data, tmp_path) -> None:
    boxes = tmp_path / "boxes.csv"
    records = tmp_path / "r.jsonl"
    boxes.write_text("path,label,x0,y0,x1,y1\nimages/a.png,,0,0,2,2\nimages/b.png,,0,0,2,2\n")
    small = run(bundle_dir, data, records, "--metrics", "om", "--boxes", str(boxes))
    boxes.write_text("path,label,x0,y0,x1,y1\nimages/a.png,,0,0,30,36\nimages/b.png,,0,0,30,36\n")
    whole = run(bundle_dir, data, records, "--metrics", "om", "--boxes", str(boxes))
    fresh = run(bundle_dir, data, tmp_path / "fresh.jsonl", "--metrics", "om", "--boxes", str(boxes))
    assert whole == fresh
    assert len(RecordStore(records).records()) == 4
    assert small != whole


def test_records_without_input_are_not_reused(bundle_dir, data, tmp_path) -> None:
    """A record written before inputs were keyed says nothing of the content it came from."""
    records = tmp_path / "r.jsonl"
    run(bundle_dir, data, records, "--metrics", "ad")
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    for r in lines:
        del r["input"]
        r["AD"] = 12345.0
    records.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert run(bundle_dir, data, records, "--metrics", "ad")["AD"] != 12345.0
