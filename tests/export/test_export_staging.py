"""Issue 13, defects 2, 9 and 11: an export replaces a bundle only when complete, keeps foreign files,
stops on Ctrl-C leaving nothing that looks like a bundle, and reports bad models and sizes in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from nets import TINY_NETS, conv_net

from opticam_rt.bundle import MANIFEST, WEIGHTS, load_bundle
from opticam_rt.errors import ExportError, TapError
from opticam_rt.export import export_bundle
from opticam_rt.export import exporter as exporter_module
from opticam_rt.export.staging import STAGING_PREFIX, swap_in

CONV = TINY_NETS["conv"]
REPO = Path(__file__).resolve().parents[2]
MAIN = "import sys; from opticam_rt.cli import main; sys.argv[0] = 'opticam-rt'; main()"


def export(out: Path, tap: str = CONV.tap, **kwargs):
    return export_bundle(conv_net(), out, tap, CONV.input_size, CONV.mean, CONV.std, verify=False, **kwargs)


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(STAGING_PREFIX)]


@pytest.fixture
def first_export(tiny_bundle, tmp_path) -> Path:
    """A folder holding a bundle (a copy of the session's conv export) and a user's file that is not part of it."""
    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle("conv")[0].path, out)
    (out / "notes.txt").write_text("mine")
    return out


def test_defect2_failed_force_export_keeps_the_old_bundle(first_export) -> None:
    """A typo in the tap with --force used to leave an empty folder; the old bundle must survive."""
    before = load_bundle(first_export).sha256
    with pytest.raises(TapError):
        export(first_export, tap="no_such_layer", force=True)
    assert load_bundle(first_export).sha256 == before
    assert (first_export / "notes.txt").read_text() == "mine"
    assert leftovers(first_export.parent) == []


def test_defect2_force_replaces_only_the_bundle_files(first_export, tmp_path) -> None:
    """The swap keeps files no export wrote, drops files only the old bundle listed, and the result loads.
    (A real --force export end to end: tests/export/test_export_cli.py::test_export_file_factory_json_force.)"""
    old = json.loads((first_export / MANIFEST).read_text())
    old["files"]["old-only.onnx"] = {"sha256": "0" * 64, "bytes": 3}  # listed by the old bundle only
    (first_export / MANIFEST).write_text(json.dumps(old))
    (first_export / "old-only.onnx").write_bytes(b"old")
    staging = tmp_path / f"{STAGING_PREFIX}new"
    shutil.copytree(first_export, staging, ignore=shutil.ignore_patterns("notes.txt", "old-only.onnx"))
    new = json.loads((staging / MANIFEST).read_text())
    del new["files"]["old-only.onnx"]
    new["model_name"] = "second"
    (staging / MANIFEST).write_text(json.dumps(new))
    swap_in(staging, first_export, force=True)
    assert load_bundle(first_export).manifest.model_name == "second"
    assert (first_export / "notes.txt").read_text() == "mine" and not (first_export / "old-only.onnx").exists()
    assert not staging.exists() and leftovers(tmp_path) == []


def test_defect2_force_never_replaces_a_file_no_export_wrote(tmp_path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / WEIGHTS).write_bytes(b"the user's own weights.bin, not from an export")
    with pytest.raises(ExportError, match="was not written by an opticam-rt export"):
        export(out, force=True)
    assert (out / WEIGHTS).read_bytes().startswith(b"the user's own")
    assert not (out / MANIFEST).exists() and leftovers(tmp_path) == []


def test_defect11_interrupt_leaves_nothing(tmp_path, monkeypatch) -> None:
    """Ctrl-C while exporting a graph leaves no bundle folder and no staging folder."""
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter_module, "to_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export(tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []


def test_defect11_ctrl_c_swallowed_by_a_library_still_stops_the_export(tmp_path, monkeypatch) -> None:
    """Ctrl-C was ignored in 2 of 14 tries: a library catching KeyboardInterrupt must not let the
    export finish and exit 0.

    The export's installed SIGINT handler is called here as the interpreter would call it on a
    Ctrl-C; the operating-system delivery is covered by the command-line test below, in its own
    process. (Sending SIGINT to the whole pytest process segfaulted in signal delivery after the
    OpenVINO and PyTorch conformance runners had run in it: native library state that a real
    export process does not have; see the issue notes.)
    """
    # A shell that starts pytest in the background (`pytest &`) has SIGINT ignored, and the export
    # rightly leaves an ignored SIGINT alone; this test is about an interactive Ctrl-C.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_swallowed(tmp_path, monkeypatch)
    finally:
        signal.signal(signal.SIGINT, previous)


def _ctrl_c_swallowed(tmp_path, monkeypatch) -> None:
    def swallowing(*args, **kwargs):
        try:
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass  # what a careless library might do
        return None  # never used: the export must stop before the next step

    monkeypatch.setattr(exporter_module, "to_onnx", swallowing)
    with pytest.raises(KeyboardInterrupt):
        export(tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


    def build():
        return Tiny()


    def broken():
        raise RuntimeError("weights file not found")
    """
)


@pytest.fixture
def factory(tmp_path) -> Path:
    path = tmp_path / "factory_for_staging.py"
    path.write_text(FACTORY)
    return path


def export_args(factory: Path, out: Path, name: str = "build", size: str = "16") -> list[str]:
    return ["export", "--model", f"{factory}:{name}", "--layer", "act", "--input-size", size,
            "--mean", "0.5", "--std", "0.25", "-o", str(out), "--no-verify"]  # fmt: skip


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """The console entry point in this process -> (exit status, stderr)."""
    from opticam_rt.cli import main

    monkeypatch.setattr(sys, "argv", ["opticam-rt", *args])
    with pytest.raises(SystemExit) as info:
        main()
    return info.value.code, capsys.readouterr().err


def test_defect9_model_factory_that_raises_is_one_line(factory, tmp_path, monkeypatch, capsys) -> None:
    code, err = run_main(monkeypatch, capsys, *export_args(factory, tmp_path / "b", name="broken"))
    assert code == 2, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert "raised RuntimeError: weights file not found" in err
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("command", ["export", "layers"])
def test_defect9_negative_input_size_is_one_line(command, factory, tmp_path, monkeypatch, capsys) -> None:
    args = export_args(factory, tmp_path / "b", size="-5") if command == "export" else [
        "layers", "--model", f"{factory}:build", "--input-size", "-5"]
    code, err = run_main(monkeypatch, capsys, *args)
    assert code == 2, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0
    assert "--input-size" in err and "Traceback" not in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_defect11_real_ctrl_c_on_the_command_line(factory, tmp_path) -> None:
    """SIGINT to a running `opticam-rt export`: exit 130 and no bundle, nothing staged."""
    out = tmp_path / "b"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "PYTHONUNBUFFERED": "1"}
    # SIGINT as a terminal leaves it: a pytest started in the background (``&``) has it ignored,
    # and an export rightly keeps an inherited ignore.
    proc = subprocess.Popen([sys.executable, "-c", MAIN, *export_args(factory, out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if line.startswith("exported forward"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "aborted" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [tmp_path / "factory_for_staging.py"]
