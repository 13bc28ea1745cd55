"""Tests of the JSON-lines record store, including resuming after a crash mid-write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from opticam_rt.errors import InputError
from opticam_rt.evaluation.records import RecordStore


def test_append_and_read_back(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "sub" / "results.jsonl")
    assert store.records() == [] and store.done_keys() == set()
    store.append({"method": "opticam", "image": "a.jpg", "AD": np.float32(1.5), "curve": np.array([1, 2])})
    store.append({"method": "gradcam", "image": "a.jpg", "AD": float("nan")})
    # A new store on the same file sees both: that is what a resumed run does.
    again = RecordStore(tmp_path / "sub" / "results.jsonl")
    assert again.records() == [
        {"method": "opticam", "image": "a.jpg", "AD": 1.5, "curve": [1, 2]},
        {"method": "gradcam", "image": "a.jpg", "AD": None},
    ]
    assert again.done_keys() == {("opticam", "a.jpg"), ("gradcam", "a.jpg")}
    lines = (tmp_path / "sub" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


def test_each_record_is_on_disk_right_after_append(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    store = RecordStore(path)
    store.append({"method": "m", "image": "1"})
    assert path.read_text() == '{"method":"m","image":"1"}\n'


def test_truncated_last_line_is_ignored_and_repaired_on_append(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"method":"m","image":"1","AD":2.0}\n{"method":"m","image":"2","A')
    store = RecordStore(path)
    assert store.records() == [{"method": "m", "image": "1", "AD": 2.0}]
    assert store.done_keys() == {("m", "1")}
    store.append({"method": "m", "image": "2", "AD": 3.0})
    assert RecordStore(path).records() == [
        {"method": "m", "image": "1", "AD": 2.0},
        {"method": "m", "image": "2", "AD": 3.0},
    ]
    assert path.read_text().count("\n") == 2


def test_complete_last_record_missing_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"method":"m","image":"1"}')
    store = RecordStore(path)
    assert store.done_keys() == {("m", "1")}
    store.append({"method": "m", "image": "2"})
    assert [r["image"] for r in RecordStore(path).records()] == ["1", "2"]


def test_damage_in_the_middle_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"method":"m","image":"1"}\n{oops\n{"method":"m","image":"2"}\n')
    with pytest.raises(InputError, match=":2:"):
        RecordStore(path).records()


def test_records_need_method_and_image(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "r.jsonl")
    with pytest.raises(InputError):
        store.append({"method": "m"})
    with pytest.raises(InputError, match="JSON"):
        store.append({"method": "m", "image": "1", "bad": {1, 2}})
    assert not (tmp_path / "r.jsonl").exists()
