"""Every command has help text, and `opticam-rt --help` does not import torch or onnxruntime."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from opticam_rt.cli import COMMANDS, SUMMARIES, cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(name: str) -> None:
    result = CliRunner().invoke(cli, [name, "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    command = cli.get_command(None, name)  # type: ignore[arg-type]
    assert command is not None and command.help and len(command.help.strip()) > 20
    assert SUMMARIES[name]


def test_top_level_help_is_light() -> None:
    code = (
        "import sys; from click.testing import CliRunner; from opticam_rt.cli import cli; "
        "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('torch', 'onnxruntime', 'cupy', 'onnx', 'ray') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_opticam_error_becomes_one_line_and_exit_2(tmp_path) -> None:
    code = "import sys; sys.argv = ['opticam-rt', 'explain', 'x.jpg', '--bundle', sys.argv[1]]; from opticam_rt.cli import main; main()"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nope")], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.startswith("error: ") and "nope" in out.stderr and "Traceback" not in out.stderr
