"""Reliability of `opticam-rt explain` (issue 13): outputs never lost or silently replaced, bad inputs per image.

Each test names the defect of issue 13 it guards against. The tiny net of tests/tiny_runtime_net.py
is the model (exported once per session).
"""

from __future__ import annotations

import json
import os
import zlib
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from opticam_rt.cli import EXIT_CRASH, EXIT_ERROR, EXIT_SOME_FAILED
from cli_run import random_photo, run_main


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return random_photo(tmp_path / "photo.png", size=(40, 50))



def explain(bundle_dir: str, out: Path, *images: Path | str) -> list[str]:
    return ["explain", *map(str, images), "--bundle", bundle_dir, "--method", "grad-cam", "--out", str(out), "--format", "json"]


def png_bomb(path: Path, side: int) -> Path:
    """A valid grayscale PNG declaring side x side pixels, all zero: tiny on disk, huge decoded."""
    row = b"\x00" + b"\x00" * side
    raw = zlib.compress(row * side, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return path


def test_defect3_second_run_never_overwrites_the_first(bundle_dir, photo, tmp_path, monkeypatch, capsys):
    """Defect 3: a second run into the same --out must not replace the first run's files silently."""
    out = tmp_path / "out"
    code, first, _ = run_main(monkeypatch, capsys, *explain(bundle_dir, out, photo))
    assert code == 0
    record = json.loads(first)[0]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = tmp_path / "other" / photo.name  # same stem, other pixels
    other.parent.mkdir()
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(other)
    code, second, err = run_main(monkeypatch, capsys, *explain(bundle_dir, out, other))
    assert code == EXIT_SOME_FAILED
    assert "exists" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the first run's outputs are intact
    assert "map" not in json.loads(second)[0]  # and the second run's JSON does not point at them
    code, third, _ = run_main(monkeypatch, capsys, *explain(bundle_dir, out, other), "--overwrite")
    assert code == 0 and json.loads(third)[0]["map"] == record["map"]
    assert np.load(record["map"]).shape == (32, 32)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_defect3_writes_are_atomic(tmp_path):
    """Defect 3: a write that fails half-way leaves no partial file under the final name."""
    from opticam_rt.errors import OutputError
    from opticam_rt.outputs import write_file

    target = tmp_path / "x.png"

    def broken(f) -> None:
        f.write(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="x.png"):
        write_file(target, broken)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_defect4_unwritable_out_fails_before_any_work(bundle_dir, photo, tmp_path, monkeypatch, capsys):
    """Defect 4: an unwritable --out is refused up front (exit 2, one line), not after computing."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_main(monkeypatch, capsys, *explain(bundle_dir, locked / "out", photo))
    finally:
        locked.chmod(0o700)
    assert code == EXIT_ERROR and err.startswith("error: --out") and err.count("\n") == 1


def test_defect4_out_that_is_a_file_fails_before_any_work(bundle_dir, photo, tmp_path, monkeypatch, capsys):
    """Defect 4 (also as root): --out naming a file is refused before computing, in one line."""
    from opticam_rt.runtime import files

    calls = []
    monkeypatch.setattr(files.Explainer, "explain", lambda *a, **k: calls.append(1))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_main(monkeypatch, capsys, *explain(bundle_dir, blocker / "out", photo))
    assert code == EXIT_ERROR and "--out" in err and err.count("\n") == 1 and "Traceback" not in err
    assert calls == []


def test_defect4_a_failed_write_is_one_image_error(bundle_dir, photo, tmp_path, monkeypatch, capsys):
    """Defect 4: a write failing for one image is that image's one-line error; the others are written."""
    from opticam_rt.runtime import files

    real = files.write_files
    second = tmp_path / "second.png"
    Image.open(photo).save(second)

    def flaky(items, overwrite=False):
        if Path(items[0][0]).name.startswith("photo"):
            raise files.OutputError(f"{items[0][0]}: cannot write (disk full)")
        return real(items, overwrite)

    monkeypatch.setattr(files, "write_files", flaky)
    code, out, err = run_main(monkeypatch, capsys, *explain(bundle_dir, tmp_path / "out", photo, second))
    records = json.loads(out)
    assert code == EXIT_SOME_FAILED
    assert "disk full" in records[0]["error"] and Path(records[1]["map"]).is_file()


def test_defect5_decompression_bomb_is_one_image_error(bundle_dir, photo, tmp_path, monkeypatch, capsys):
    """Defect 5: a 20000 x 20000 PNG of a few hundred KB is refused per image; the others are explained."""
    bomb = png_bomb(tmp_path / "bomb.png", 20000)
    assert bomb.stat().st_size < 1_000_000
    code, out, err = run_main(monkeypatch, capsys, *explain(bundle_dir, tmp_path / "out", bomb, photo))
    records = json.loads(out)
    assert code == EXIT_SOME_FAILED
    assert "too large" in records[0]["error"] and str(bomb) in records[0]["error"]
    assert Path(records[1]["map"]).is_file() and "Traceback" not in err


def test_defect5_overlay_of_a_large_photo_is_capped(tmp_path):
    """Defect 5: the overlay of a very large photo is capped (memory), and keeps the aspect ratio."""
    from opticam_rt.images import OVERLAY_MAX_SIDE, load_image
    from opticam_rt.overlay import overlay

    big = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 3000), (120, 30, 200)).save(big, quality=80)
    image = load_image(big, (32, 32))
    assert image.original_size == (3000, 6000)
    assert image.original.shape == (OVERLAY_MAX_SIDE // 2, OVERLAY_MAX_SIDE, 3)
    picture = overlay(np.zeros((3000, 6000, 3), np.uint8), np.random.default_rng(0).random((32, 32)))
    assert picture.shape == (OVERLAY_MAX_SIDE // 2, OVERLAY_MAX_SIDE, 3)


def test_defect10_folder_and_unreadable_file_are_per_image_errors(bundle_dir, photo, tmp_path, monkeypatch, capsys):
    """Defect 10: a folder or an unreadable file among the images is one image's error, like a missing file."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    unreadable = tmp_path / "secret.png"
    Image.open(photo).save(unreadable)
    unreadable.chmod(0)
    missing = tmp_path / "missing.png"
    try:
        code, out, err = run_main(monkeypatch, capsys, *explain(bundle_dir, tmp_path / "out", folder, unreadable, missing, photo))
    finally:
        unreadable.chmod(0o600)
    records = json.loads(out)
    assert code == EXIT_SOME_FAILED
    assert [r["image"] for r in records] == [str(folder), str(unreadable), str(missing), str(photo)]
    assert "folder" in records[0]["error"] and "no such image" in records[2]["error"]
    if os.geteuid() != 0:
        assert "permission denied" in records[1]["error"]
    assert Path(records[3]["map"]).is_file()


def test_defect10_exit_codes_are_distinct(bundle_dir, photo, tmp_path, monkeypatch, capsys):
    """Defect 10: some images failed (1), the command could not run (2), the tool crashed (3)."""
    from opticam_rt.runtime import files

    assert len({EXIT_SOME_FAILED, EXIT_ERROR, EXIT_CRASH}) == 3
    code, _, err = run_main(monkeypatch, capsys, *explain(bundle_dir, tmp_path / "o1", photo, tmp_path / "nope.png"))
    assert code == EXIT_SOME_FAILED
    code, _, err = run_main(monkeypatch, capsys, *explain(str(tmp_path / "no-bundle"), tmp_path / "o2", photo))
    assert code == EXIT_ERROR and err.startswith("error: ")

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(files.Explainer, "explain", bug)
    code, _, err = run_main(monkeypatch, capsys, *explain(bundle_dir, tmp_path / "o3", photo))
    assert code == EXIT_CRASH
    assert err.startswith("internal error: ZeroDivisionError: a bug") and "Traceback" not in err


def test_onnx_runtime_refusing_a_graph_is_a_one_line_error(bundle_dir, photo, tmp_path, monkeypatch, capsys):
    """A graph that passes the load checks but that ONNX Runtime refuses: exit 2, one line (not 'internal error')."""
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf

    from opticam_rt.runtime import files

    def refuse(*args, **kwargs):
        raise InvalidProtobuf("Load model from forward.onnx failed: Protobuf parsing failed.")

    monkeypatch.setattr(files.Explainer, "explain", refuse)
    code, _, err = run_main(monkeypatch, capsys, *explain(bundle_dir, tmp_path / "out", photo))
    assert code == EXIT_ERROR and err.startswith("error: ONNX Runtime:") and err.count("\n") == 1
