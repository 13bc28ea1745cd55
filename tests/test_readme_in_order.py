"""The README's command lines run in order in one fresh folder, as a new user types them.

Each line runs through the console entry point (``opticam_rt.cli.main``), one after another, in
one empty working folder, so an output one line writes and the next refuses ("exists") fails the
test. To keep it to seconds, the models are swapped for tiny ones of the same kind (the
built-in EfficientNet-Lite0 for tests/tiny_runtime_net.py, the ResNet and ViT recipes for
tests/arch_zoo.py's tiny ones, each with its own tap and input size), Opti-CAM's 100 steps for
3, and the bench gate's threshold widened (tiny timings are noise; the gate has its own tests);
exports skip verification (and, where no later line uses them, the explainer graphs), which
tests/export checks on the same nets.
The demo line (the built-in model, minutes), the serve line (it runs until stopped) and the two
``--ray`` lines (a Ray cluster each) are left out here: tests/test_cli_explain.py runs the demo,
tests/serve the server, tests/scale the Ray paths.
"""

from __future__ import annotations

import glob
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import arch_zoo
import test_readme
import tiny_runtime_net as tiny

TESTS = Path(__file__).resolve().parent
TINY = [f"{TESTS / 'tiny_runtime_net.py'}:make", "--layer", tiny.TAP, "--input-size", "32",
        "--mean", ",".join(map(str, tiny.MEAN)), "--std", ",".join(map(str, tiny.STD))]
#: the README's model arguments -> the tiny stand-ins (all of the README's options for a model
#: are replaced together, so the tiny model's own tap and size apply)
MODELS = {
    "efficientnet-lite0": TINY,
    "mypkg.models:make_resnet": [f"{TESTS / 'arch_zoo.py'}:tiny_resnet", "--layer", "layer4", "--input-size", "64"],
    "mypkg.models:make_vit": [f"{TESTS / 'arch_zoo.py'}:tiny_vit", "--layer", "auto", "--token-reshape",
                              "--input-size", "32", "--mean", "0.5", "--std", "0.5"],
}
MODEL_OPTIONS = {"--layer": 1, "--input-size": 1, "--mean": 1, "--std": 1, "--token-reshape": 0}
LEFT_OUT = {"demo", "serve"}  # serve runs until stopped: tests/serve start and stop it


def substitute(args: list[str]) -> list[str]:
    """The README's line with the tiny stand-ins: the model's options the stand-in names replace
    the README's; the others (e.g. the ResNet line's --mean/--std) are kept."""
    out: list[str] = []
    model: list[str] | None = None
    i = 0
    while i < len(args):
        word = args[i]
        if word == "--model":
            model = MODELS[args[i + 1]]
            out += ["--model", model[0]]
            i += 2
            continue
        if word in MODEL_OPTIONS and model is not None and word in model:
            i += 1 + MODEL_OPTIONS[word]  # the stand-in's own value is added below
            continue
        if word == "--iterations":
            word, args = "--iterations", [*args[: i + 1], "3", *args[i + 2 :]]
        elif word == "--threshold":
            args = [*args[: i + 1], "0.99", *args[i + 2 :]]
        out.append(word)
        i += 1
    if model is not None:
        extra = model[1:]
        if args[0] == "layers":  # layers takes only the size
            extra = ["--input-size", extra[extra.index("--input-size") + 1]]
        out += extra
    if args[0] == "export":  # verification and the unused explainer graphs: tested on their own
        out += ["--no-verify"] + (["--no-explainers"] if "bundles/effnet" not in args else [])
    if args[0] == "bench":
        out += ["--repeat", "1", "--iterations", "3"]
    return out


def readme_lines() -> list[list[str]]:
    return [c for c in test_readme._commands() if c[0] not in LEFT_OUT and "--ray" not in c]


@pytest.fixture
def fresh_folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("photo1.jpg", "photo2.png"):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "photos").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"p{i}.jpg")
    return tmp_path


def test_readme_has_the_lines_this_test_runs() -> None:
    lines = readme_lines()
    assert [c[0] for c in lines][:2] == ["export", "export"] and len(lines) >= 10
    for c in lines:
        if "--model" in c:
            assert c[c.index("--model") + 1] in MODELS, f"a README model this test cannot stand in for: {c}"


def test_readme_lines_run_in_order(fresh_folder: Path) -> None:
    env_code = "from opticam_rt.cli import main; main()"
    for args in readme_lines():
        argv = substitute(args)
        # the shell's glob, as a user's shell expands it
        argv = [m for a in argv for m in (sorted(glob.glob(str(fresh_folder / a))) and
                [str(Path(p).relative_to(fresh_folder)) for p in sorted(glob.glob(str(fresh_folder / a)))]
                if "*" in a else [a])]
        done = subprocess.run([sys.executable, "-c", env_code, *argv], cwd=fresh_folder, capture_output=True,
                              text=True, timeout=300)
        line = "opticam-rt " + shlex.join(args)
        assert done.returncode == 0, f"{line}\n(run as {shlex.join(argv)})\n{done.stderr[-2000:]}"
    # what the lines were to write is there
    for path in ("bundles/effnet/manifest.json", "bundles/resnet/manifest.json", "bundles/vit/manifest.json",
                 "maps/photo1.opti-cam.npy", "maps-graph/photo1.opti-cam.npy", "curves.png", "bench-baseline.json"):
        assert (fresh_folder / path).is_file(), path
