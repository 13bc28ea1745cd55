"""Commands that need an optional package which is not installed end with the install line, exit 2.

The package is hidden in a child interpreter (``sys.modules[name] = None`` makes its import fail the
way a missing install does), so the test runs on a machine where torch is installed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HIDE_AND_RUN = "import sys; sys.modules[{name!r}] = None; from opticam_rt.cli import main; main()"


def run_without(package: str, *args: str) -> subprocess.CompletedProcess:
    code = HIDE_AND_RUN.format(name=package)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args",
    [
        ("layers", "--model", "efficientnet-lite0"),
        ("export", "--model", "efficientnet-lite0", "--out", "{tmp}/bundle"),
    ],
    ids=["layers", "export"],
)
def test_torch_missing_is_an_install_hint(tmp_path, args):
    args = tuple(a.format(tmp=tmp_path) for a in args)
    result = run_without("torch", *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "'torch'" in lines[0] and "pip install 'opticam-rt[all]'" in lines[0]
    assert "internal error" not in result.stderr


def test_unknown_missing_module_is_still_a_bug(tmp_path):
    # a module that is not an optional dependency (here: one of our own) is a crash, exit 3
    result = run_without("opticam_rt.export.exporter", "layers", "--model", "efficientnet-lite0")
    assert result.returncode == 3, result.stderr
    assert "internal error" in result.stderr


@pytest.fixture
def photos(tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_plot_without_matplotlib_is_refused_before_any_work(tmp_path, tmp_path_factory, photos):
    import tiny_runtime_net

    bundle = tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp()).path
    records = tmp_path / "r.jsonl"
    result = run_without("matplotlib", "evaluate", str(photos), "--bundle", str(bundle), "--methods", "grad-cam",
                         "--records", str(records), "--plot", str(tmp_path / "curves.png"))
    assert result.returncode == 2, result.stderr
    assert "--plot needs matplotlib" in result.stderr and "pip install 'opticam-rt[all]'" in result.stderr
    assert not records.exists()  # refused before the first image


def test_sanity_plot_without_matplotlib_is_refused_before_any_work(tmp_path, photos):
    import tiny_runtime_net as tiny

    spec = f"{tiny.__file__}:make"
    records = tmp_path / "w.jsonl"
    result = run_without("matplotlib", "sanity", "wall", str(photos), "--model", spec, "--layer", tiny.TAP,
                         "--input-size", "32", "--methods", "grad-cam", "--records", str(records),
                         "--plot", str(tmp_path / "wall.png"))
    assert result.returncode == 2, result.stderr
    assert "--plot needs matplotlib" in result.stderr and not records.exists()
