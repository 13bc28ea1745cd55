"""Method options are declared once (a dataclass per method), checked by the API, honoured or
refused by each backend, and turned into CLI flags."""

from __future__ import annotations

import math
from dataclasses import dataclass

import click
import pytest

from opticam_rt.errors import InputError
from opticam_rt.constants import MAX_ITERATIONS
from opticam_rt.methods import REGISTRY
from opticam_rt.methods.opti_cam import OptiCAMOptions
from opticam_rt.methods.options import MethodOptions, option


def test_every_method_has_a_reference_and_declared_options():
    for name, cls in REGISTRY.items():
        assert callable(cls.reference) and cls.host.name == name
        assert issubclass(cls.Options, MethodOptions)
        for info in cls.Options.infos():
            assert info.spec.help, f"{name}.{info.name} has no help text"
            assert info.kind in (int, float, str), (name, info.name, info.kind)
        # the declared defaults pass their own checks
        assert cls.Options.parse({i.name: i.default for i in cls.Options.infos()}, name) == cls.Options()


@pytest.mark.parametrize(
    "given, message",
    [
        ({"iteration": 3}, r"opti-cam has no option 'iteration' \(did you mean 'iterations'\?\); its options are: iterations, lr"),
        ({"lr": math.nan}, r"opti-cam option lr must be a finite number, got nan"),
        ({"lr": math.inf}, r"option lr must be a finite number"),
        ({"lr": 0.0}, r"option lr must be > 0, got 0.0"),
        ({"iterations": 0}, r"option iterations must be >= 1, got 0"),
        ({"iterations": MAX_ITERATIONS + 1}, rf"option iterations must be <= {MAX_ITERATIONS}"),
        ({"iterations": 2.5}, r"option iterations must be an integer, got 2.5"),
        ({"iterations": True}, r"option iterations must be an integer, got True"),
        ({"lr": "fast"}, r"option lr must be a number, got 'fast'"),
        ({"loss": "l2"}, r"option loss must be one of mask, diff, got 'l2'"),
        ({"tol": -1e-3}, r"option tol must be >= 0"),
        ({"patience": 0}, r"option patience must be >= 1"),
    ],
)
def test_bad_opticam_options_name_the_option(given, message):
    with pytest.raises(InputError, match=message):
        OptiCAMOptions.parse(given, "opti-cam")


def test_parse_keeps_given_values_and_fills_defaults():
    opts = OptiCAMOptions.parse({"iterations": 7, "lr": 1, "tol": 0}, "opti-cam")
    assert (opts.iterations, opts.lr, opts.tol, opts.loss, opts.patience) == (7, 1.0, 0.0, "mask", 5)
    assert isinstance(opts.lr, float) and isinstance(opts.iterations, int)


def test_explain_rejects_typos_and_foreign_options_before_any_work(tiny_ort, tiny_images):
    with pytest.raises(InputError, match="did you mean 'iterations'"):
        tiny_ort.explain(tiny_images, "opti-cam", iteration=3)
    with pytest.raises(InputError, match="grad-cam has no option 'lr'; its options are: none"):
        tiny_ort.explain(tiny_images, "grad-cam", lr=0.1)
    with pytest.raises(InputError, match="score-cam option chunk must be >= 1"):
        tiny_ort.explain(tiny_images, "score-cam", chunk=0)


def test_explanation_reports_the_options_it_ran_with(tiny_ort, tiny_images):
    out = tiny_ort.explain(tiny_images[:1], "opti-cam", iterations=2, lr=0.05)
    assert out.options == {**OptiCAMOptions().as_dict(), "iterations": 2, "lr": 0.05}
    assert out.trace.shape == (1, 2) and list(out.iterations) == [2]
    assert tiny_ort.explain(tiny_images[:1], "grad-cam").options == {}


def test_torch_backend_refuses_options_it_would_ignore(tiny_torch, tiny_images):
    """The reference runs every step: tol and patience would silently do nothing there."""
    with pytest.raises(InputError, match=r"backend 'torch' cannot honour opti-cam option\(s\) tol \(it acts on: iterations, loss, lr\)"):
        tiny_torch.explain(tiny_images, "opti-cam", iterations=2, tol=0.01)
    with pytest.raises(InputError, match="cannot honour opti-cam option"):
        tiny_torch.explain(tiny_images, "opti-cam", iterations=2, pipeline="split")
    # options it honours reach it; defaults given explicitly are not refused
    out = tiny_torch.explain(tiny_images[:1], "opti-cam", iterations=3, pipeline="fused")
    assert out.trace.shape == (1, 3) and out.backend == "torch"


def test_conflicting_declarations_are_caught(monkeypatch):
    from opticam_rt.cli import method_options

    @dataclass(frozen=True)
    class Clashing(MethodOptions):
        iterations: float = option(1.0, "same name, other type")

    class Fake:
        Options = Clashing

    monkeypatch.setitem(method_options.REGISTRY, "fake-method", Fake)
    with pytest.raises(TypeError, match="option 'iterations'"):
        method_options.declared_options()


@pytest.mark.parametrize("command", ["explain", "evaluate", "bench", "sanity wall", "sanity randomisation"])
def test_cli_flags_are_generated_from_every_declaration(command):
    from opticam_rt.cli import cli

    cmd = cli
    for word in command.split():
        cmd = cmd.get_command(click.Context(cmd), word)
    flags = {opt for p in cmd.params for opt in p.opts}
    for cls in REGISTRY.values():
        for info in cls.Options.infos():
            assert f"--{info.name.replace('_', '-')}" in flags, (command, info.name)


def test_cli_option_for_another_method_is_a_one_line_error(tiny_bundle, tmp_path, capsys):
    from opticam_rt.cli import main

    photo = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (120, 30, 200)).save(photo)
    for extra, message in (
        (["--method", "grad-cam", "--lr", "0.1"], "error: --lr applies to opti-cam, "),  # and every other method with an lr
        (["--method", "opti-cam", "--lr", "nan"], "error: opti-cam option lr must be a finite number, got nan"),
        (["--method", "opti-cam", "--iterations", "1000000000"], f"must be <= {MAX_ITERATIONS}"),
    ):
        argv = ["opticam-rt", "explain", str(photo), "--bundle", str(tiny_bundle.path), "--out", str(tmp_path / "o"), *extra]
        monkey_argv = pytest.MonkeyPatch()
        monkey_argv.setattr("sys.argv", argv)
        try:
            with pytest.raises(SystemExit) as info:
                main()
        finally:
            monkey_argv.undo()
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and message in err and "Traceback" not in err, err
        if "--lr" in extra and "0.1" in extra:
            assert err.endswith("not to grad-cam"), err
        assert len(err.splitlines()) == 1, err
        assert not (tmp_path / "o").exists(), "the run started before the options were checked"
