"""The README matches the code: CI runs its test command, its CLI lines use real commands and
options, and its Python example runs (on the tiny test bundle instead of EfficientNet-Lite0)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import tiny_runtime_net
from PIL import Image

from opticam_rt.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands() -> list[list[str]]:
    """Every ``opticam-rt ...`` command in the README's bash blocks, continuations joined."""
    found = []
    for block in _blocks("bash"):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in re.split(r"&&|;", line):
                words = shlex.split(part)
                if words[:1] == ["opticam-rt"]:
                    found.append(words[1:])
    return found


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    first = _blocks("bash")[0]
    lines = [ln for ln in first.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines[0] == 'pip install -e ".[all]" && opticam-rt demo --out opticam-demo'
    assert lines[1] == 'pip install -e ".[all,dev]" && python -m pytest -q'
    assert lines[1] in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("args", _commands(), ids=lambda a: " ".join(a[:3]))
def test_readme_cli_lines_use_real_commands_and_options(args: list[str]) -> None:
    command = cli.get_command(None, args[0])  # type: ignore[arg-type]
    assert command is not None, f"README uses an unknown command: {args[0]}"
    while hasattr(command, "get_command") and len(args) > 1 and not args[1].startswith("-"):  # a group: its subcommand
        sub = command.get_command(None, args[1])  # type: ignore[arg-type]
        assert sub is not None, f"README uses an unknown subcommand: {args[0]} {args[1]}"
        command, args = sub, args[1:]
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    used = {word.split("=", 1)[0] for word in args[1:] if word.startswith("-")}
    assert used <= known, f"`opticam-rt {args[0]}` has no option(s) {sorted(used - known)}"


def test_readme_python_example_runs(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    (example,) = _blocks("python")
    bundle = tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp()).path
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(photo)
    code = example.replace('"bundles/effnet"', repr(str(bundle))).replace('"photo.jpg"', repr(str(photo)))
    code = code.replace("iterations=100", "iterations=3")  # the tiny net needs no more to run the code
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    result = namespace["result"]
    assert result.maps.shape == (1, *namespace["explainer"].input_size)
    assert result.trace.shape == (1, 3)
