"""``opticam-rt export`` and ``opticam-rt layers`` with user factories (the lead tests --help of all commands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from opticam_rt.bundle import load_bundle
from opticam_rt.cli import cli
from opticam_rt.errors import ExportError
from opticam_rt.export import load_recipe
from opticam_rt.export.explainer_graphs import EXPLAINER_GRAPHS

TESTS_DIR = Path(__file__).resolve().parents[1]

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.ReLU()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(self.act(self.conv(x)).mean(dim=(2, 3)))


    def build():
        return Tiny()


    def not_a_module():
        return 42


    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def factory_file(tmp_path) -> Path:
    path = tmp_path / "tiny_factory.py"
    path.write_text(FACTORY)
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_export_file_factory_json_force(factory_file, tmp_path) -> None:
    """``path/to/file.py:factory`` with every setting on the command line; --force exports into a
    non-empty directory and leaves files no export wrote alone; --format json keeps stdout machine-readable (progress goes to stderr)."""
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    spec = f"{factory_file}:build"
    result = invoke(
        "export", "--model", spec, "--layer", "act", "--input-size", "16",
        "--mean", "0.5", "--std", "0.25,0.25 0.25", "-o", out, "--force", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["bundle"] == str(out)
    assert payload["verification"]["passed"] is True
    assert set(payload["verification"]["graphs"]) == {"forward", "grad_features", "grad_image", "head", "opticam_step"}
    assert "exported opticam_step" in result.stderr
    assert (out / "stale.txt").read_text() == "old"
    m = load_bundle(out).manifest
    assert (m.model_name, m.model_spec) == ("build", spec)
    assert (m.input_size, m.mean, m.std) == ((16, 16), (0.5,) * 3, (0.25,) * 3)
    assert (m.tap_layer, m.tap_shape, m.num_classes, m.class_names) == ("act@0", (4, 16, 16), 3, None)
    assert all((out / entry["file"]).is_file() for entry in m.explainers.values()) and set(m.explainers) == set(EXPLAINER_GRAPHS)


def test_export_no_explainers(factory_file, tmp_path) -> None:
    """--no-explainers writes the five bundle graphs only; the manifest lists no explainer graph."""
    out = tmp_path / "bundle"
    result = invoke("export", "--model", f"{factory_file}:build", "--layer", "act", "--input-size", "16",
                    "--mean", "0.5", "--std", "0.25", "-o", out, "--no-verify", "--no-explainers")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_bundle(out).manifest.explainers == {}
    assert not list(out.glob("explain_*.onnx"))
    # They can be added later, from the bundle's graphs alone; the manifest hashes them.
    from opticam_rt.export.explainer_graphs import add_explainer_graphs
    from opticam_rt.runtime.embedded import GraphExplainer

    bundle = add_explainer_graphs(out)
    assert set(bundle.manifest.explainers) == set(EXPLAINER_GRAPHS)  # every registered method's graph
    assert all(entry["file"] in bundle.manifest.files for entry in bundle.manifest.explainers.values())
    result = GraphExplainer(bundle).run(np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32), "grad-cam")
    assert result.map.shape == (2, 16, 16) and np.isfinite(result.map).all()


def test_export_refuses_non_empty_directory_without_force(factory_file, tmp_path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="not empty; pass --force"):
        invoke("export", "--model", f"{factory_file}:build", "--layer", "act", "--input-size", "16",
               "--mean", "0.5", "--std", "0.25", "-o", out)  # fmt: skip
    assert (out / "keep.txt").exists()


def test_export_factory_needs_settings(factory_file, tmp_path) -> None:
    with pytest.raises(ExportError, match=r"is not built in: give --layer, --input-size, --mean, --std"):
        invoke("export", "--model", f"{factory_file}:build", "-o", tmp_path / "b")
    with pytest.raises(ExportError, match=r"give --std$"):
        invoke("export", "--model", f"{factory_file}:build", "--layer", "act", "--input-size", "16",
               "--mean", "0.5", "-o", tmp_path / "b")  # fmt: skip


def test_export_bad_numbers_is_a_usage_error(factory_file, tmp_path) -> None:
    result = invoke("export", "--model", f"{factory_file}:build", "--layer", "act", "--input-size", "16",
                    "--mean", "a,b,c", "--std", "0.25", "-o", tmp_path / "b")  # fmt: skip
    assert result.exit_code == 2
    assert "'a,b,c' is not a list of numbers" in result.output


def test_exit_status_and_one_line_error(tmp_path) -> None:
    """The console entry point turns an OpticamError into 'error: ...' and exit status 2."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    command = [
        sys.executable, "-c", "from opticam_rt.cli import main; main()",
        "export", "--model", "nets:conv_net", "--layer", "blok.act", "--input-size", "32",
        "--mean", "0.5", "--std", "0.25", "-o", str(tmp_path / "b"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: unknown layer 'blok.act'. Closest names: block.act"), done.stderr
    assert "Traceback" not in done.stderr


def test_layers_module_factory_lists_shapes_and_calls(monkeypatch) -> None:
    """``pkg.module:factory`` (here tests/nets.py, importable as ``nets``); a shared module is
    listed once per call with its @i suffix."""
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    result = invoke("layers", "--model", "nets:branch_net", "--input-size", "24")
    assert result.exit_code == 0, result.output
    rows = [line.split(None, 1) for line in result.stdout.splitlines()]
    # each line: name, (C, H, W), the layout assumed and why
    listed = {name: rest[: rest.index(")") + 1] for name, rest in rows}
    assert all(" channels-first (" in rest for _, rest in rows)
    assert [name for name, shape in rows if "(--layer auto)" in shape] == ["act@1"]
    assert listed["stem"] == "(6, 24, 24)"
    assert listed["act@0"] == "(6, 24, 24)"
    assert listed["act@1"] == "(8, 6, 6)"
    assert listed["pool"] == "(6, 12, 12)"
    assert "act" not in listed and "fc" not in listed  # no bare shared name, no 2-D outputs
    names = [name for name, _ in rows]
    assert names.index("act@0") < names.index("pool") < names.index("act@1")  # execution order

    data = json.loads(invoke("layers", "--model", "nets:branch_net", "--input-size", "24", "--format", "json").stdout)
    act = next(row for row in data if row["layer"] == "act@1")
    assert act["shape"] == [8, 6, 6] and act["auto"] is True and act["layout"] == "channels-first"
    assert act["features"] == [8, 6, 6]


def test_layers_file_factory_default_size(factory_file) -> None:
    result = invoke("layers", "--model", f"{factory_file}:build", "--format", "json")
    rows = json.loads(result.stdout)
    assert [(r["layer"], r["shape"], r.get("auto")) for r in rows] == [("conv", [4, 224, 224], None),
                                                                     ("act", [4, 224, 224], True)]  # fmt: skip
    assert rows[0]["layout"] == "channels-first" and "Conv2d(..., 4)" in rows[0]["layout_from"]


def test_layers_marks_the_builtin_default_tap(effnet_recipe) -> None:
    result = invoke("layers", "--model", "efficientnet-lite0")
    assert result.exit_code == 0, result.output
    marked = [line for line in result.stdout.splitlines() if "(default tap)" in line]
    assert len(marked) == 1 and marked[0].split()[0] == "_swish@1"
    assert "(1280, 7, 7)" in marked[0]


def test_load_recipe_factories(factory_file, monkeypatch) -> None:
    recipe = load_recipe(f"{factory_file}:build")
    assert recipe.name == "build"
    assert (recipe.tap, recipe.input_size, recipe.mean, recipe.std, recipe.class_names) == (None,) * 5
    assert type(recipe.build()).__name__ == "Tiny"
    monkeypatch.syspath_prepend(str(factory_file.parent))
    assert type(load_recipe("tiny_factory:build").build()).__name__ == "Tiny"


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ("resnet50", r"unknown model 'resnet50': use a built-in name \(efficientnet-lite0\)"),
        ("missing_dir/nothing.py:build", r"model file missing_dir/nothing.py does not exist"),
        ("no_such_module_xyz:build", r"cannot import 'no_such_module_xyz'"),
        ("{file}:nothing", r"has no callable 'nothing'"),
        ("{file}:NOT_CALLABLE", r"has no callable 'NOT_CALLABLE'"),
    ],
)
def test_load_recipe_errors(spec, pattern, factory_file) -> None:
    with pytest.raises(ExportError, match=pattern):
        load_recipe(spec.format(file=factory_file))


def test_factory_must_return_a_module(factory_file) -> None:
    recipe = load_recipe(f"{factory_file}:not_a_module")
    with pytest.raises(ExportError, match=r"returned int, not a torch.nn.Module"):
        recipe.build()


def test_help_texts() -> None:
    top = invoke("--help")
    assert top.exit_code == 0
    assert "Saliency maps" in top.output
    assert "Export a PyTorch classifier to an explainer bundle" in top.output
    assert "List candidate tap layers" in top.output
    export_help = invoke("export", "--help")
    assert export_help.exit_code == 0
    assert "Export a PyTorch classifier to an explainer bundle and verify it" in export_help.output
    flowing = " ".join(export_help.output.split())  # help wraps at the widest option name
    for option in ("--model", "--layer", "--input-size", "--mean", "--std", "--out", "--force", "--opset",
                   "--no-verify", "--format", "--channels-last / --channels-first", "name@i picks a call"):  # fmt: skip
        assert option in flowing, option
    layers_help = invoke("layers", "--help")
    assert layers_help.exit_code == 0
    assert "List candidate tap layers (modules with a 4-D output, with the layout" in layers_help.output
    assert invoke("--version").output.strip().endswith("0.1.0")


def test_top_level_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from opticam_rt.cli import cli\n"
        "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'onnxruntime' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"


def test_export_auto_layer_non_square_input(factory_file, tmp_path) -> None:
    """``--layer auto`` picks the last feature map; ``--input-size HxW`` is height first, and the
    bundle explains non-square images."""
    import numpy as np

    from opticam_rt.runtime import Explainer

    out = tmp_path / "bundle"
    result = invoke("export", "--model", f"{factory_file}:build", "--layer", "auto", "--input-size", "12x20",
                    "--mean", "0.5", "--std", "0.25", "-o", out, "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verification"]["passed"] is True
    m = load_bundle(out).manifest
    assert (m.input_size, m.tap_layer, m.tap_shape, m.tap_tokens) == ((12, 20), "act@0", (4, 12, 20), None)
    images = np.random.default_rng(0).random((2, 3, 12, 20), dtype=np.float32)
    with Explainer(out, backend="ort-cpu") as explainer:
        maps = explainer.explain(images, method="grad-cam").maps
    assert maps.shape == (2, 12, 20) and np.isfinite(maps).all()


@pytest.mark.parametrize("size", ["224x", "x224", "0", "224x320x3", "big"])
def test_bad_input_size_is_an_input_error_before_any_work(factory_file, tmp_path, size) -> None:
    """The console entry point prints it as one line with exit status 2 (tests/export/test_export_staging.py)."""
    from opticam_rt.errors import InputError

    with pytest.raises(InputError, match=rf"--input-size {size!r} is not a size: use 224 or HxW"):
        invoke("export", "--model", f"{factory_file}:build", "--layer", "act", "--input-size", size,
               "--mean", "0.5", "--std", "0.25", "-o", tmp_path / "b")  # fmt: skip
    assert not (tmp_path / "b").exists()


def test_layers_lists_token_layers_with_their_grid(monkeypatch) -> None:
    """A ViT's token layers are listed with the grid --token-reshape lays them out on; --layer
    auto marks the last block's first LayerNorm."""
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    data = json.loads(invoke("layers", "--model", "arch_zoo:tiny_vit", "--input-size", "32", "--format", "json").stdout)
    rows = {row["layer"]: row for row in data}
    assert rows["conv_proj"]["shape"] == [16, 4, 4] and "tokens" not in rows["conv_proj"]
    last = rows["encoder.layers.encoder_layer_1.ln_1"]
    assert last == {"layer": "encoder.layers.encoder_layer_1.ln_1", "shape": [17, 16],
                    "tokens": {"prefix": 1, "grid": [16, 4, 4]}, "auto": True}  # fmt: skip
    assert [r["layer"] for r in data if r.get("auto")] == ["encoder.layers.encoder_layer_1.ln_1"]
    text = invoke("layers", "--model", "arch_zoo:tiny_vit", "--input-size", "32").stdout
    line = next(x for x in text.splitlines() if x.startswith("encoder.layers.encoder_layer_1.ln_1 "))
    assert "tokens (17, 16) -> (16, 4, 4) with --token-reshape, 1 prefix token(s) dropped  (--layer auto)" in line
