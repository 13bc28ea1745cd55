"""A bundle is data: the code its manifest names (``model_spec``) is imported only when the user
names the model (``--model``/``model=``) or opts in (OPTICAM_RT_TRUST_BUNDLE_CODE=1 / ``trust_code``).
Issue 21, defect 1: a manifest naming ``payload.py`` inside the bundle ran it from ``bench`` and
``explain --backend torch``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import tiny_runtime_net

from opticam_rt.bundle import MANIFEST
from opticam_rt.errors import UntrustedCodeError
from opticam_rt.reference.model import TRUST_ENV, model_spec_for
from cli_run import random_photo, run_main

TINY = f"{Path(tiny_runtime_net.__file__).resolve()}:make"


@pytest.fixture
def untrusted(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's default: no opt-in (the suite's conftest trusts its own bundles)."""
    monkeypatch.delenv(TRUST_ENV, raising=False)


@pytest.fixture
def hostile(bundle_dir: str, tmp_path: Path) -> tuple[Path, Path]:
    """(a copy of the tiny bundle whose manifest names its own payload.py, the file the payload
    creates when it is imported)."""
    copy = tmp_path / "hostile-bundle"
    shutil.copytree(bundle_dir, copy)
    marker = tmp_path / "payload-ran"
    (copy / "payload.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        f"import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('tiny_again', {str(Path(tiny_runtime_net.__file__).resolve())!r})\n"
        f"mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"make = mod.make\n"
    )
    data = json.loads((copy / MANIFEST).read_text())
    data["model_spec"] = f"{copy / 'payload.py'}:make"
    (copy / MANIFEST).write_text(json.dumps(data))
    return copy, marker


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    return random_photo(tmp_path / "photo.png")



def test_explainer_refuses_manifest_code(untrusted, hostile) -> None:
    from opticam_rt.runtime import Explainer

    bundle, marker = hostile
    with pytest.raises(UntrustedCodeError, match=r"payload\.py:make.*not imported.*--model.*OPTICAM_RT_TRUST_BUNDLE_CODE=1"):
        Explainer(bundle, backend="torch")
    assert not marker.exists()


def test_explain_cli_refuses_manifest_code(untrusted, hostile, photo, tmp_path, monkeypatch, capsys) -> None:
    bundle, marker = hostile
    code, _, err = run_main(monkeypatch, capsys, "explain", photo, "--bundle", bundle, "--backend", "torch",
                            "--method", "grad-cam", "--out", tmp_path / "out")
    assert code == 2
    assert err.strip().count("\n") == 0 and "payload.py:make" in err and "not imported" in err
    assert not marker.exists()
    assert not (tmp_path / "out" / "photo.grad-cam.npy").exists()


def test_explain_cli_runs_the_model_the_user_names(untrusted, hostile, photo, tmp_path, monkeypatch, capsys) -> None:
    bundle, marker = hostile
    code, _, err = run_main(monkeypatch, capsys, "explain", photo, "--bundle", bundle, "--backend", "torch",
                            "--method", "grad-cam", "--model", TINY, "--out", tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / "photo.grad-cam.npy").exists()
    assert not marker.exists()


def test_bench_without_model_skips_torch_and_says_so(untrusted, hostile, monkeypatch, capsys) -> None:
    bundle, marker = hostile
    code, out, err = run_main(monkeypatch, capsys, "bench", "--bundle", bundle, "--methods", "floor-forward",
                              "--backends", "ort-cpu", "--repeat", "1", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert rows and {r["backend"] for r in rows} == {"ort-cpu"}
    assert "no PyTorch reference" in err and "payload.py:make" in err
    assert not marker.exists()


def test_bench_with_model_has_the_torch_column(untrusted, hostile, monkeypatch, capsys) -> None:
    bundle, marker = hostile
    code, out, err = run_main(monkeypatch, capsys, "bench", "--bundle", bundle, "--methods", "floor-forward",
                              "--backends", "ort-cpu", "--repeat", "1", "--format", "json", "--model", TINY)
    assert code == 0, err
    assert {r["backend"] for r in json.loads(out)} == {"ort-cpu", "torch"}
    assert not marker.exists()


@pytest.mark.parametrize("how", ["env", "argument"])
def test_opt_in_imports_the_manifest_code(untrusted, hostile, monkeypatch, how) -> None:
    from opticam_rt.runtime import Explainer

    bundle, marker = hostile
    if how == "env":
        monkeypatch.setenv(TRUST_ENV, "1")
    with Explainer(bundle, backend="torch", trust_code=how == "argument") as explainer:
        assert explainer.runner.name == "torch"
    assert marker.exists()


@pytest.mark.parametrize("spec", ["os:getcwd", "payload.py:make", "/tmp/x.py:f", "pkg.mod:factory"])
def test_any_named_code_needs_the_users_word(untrusted, spec) -> None:
    for manifest in (SimpleNamespace(model_spec=spec, model_name="x"), SimpleNamespace(model_spec=None, model_name=spec)):
        with pytest.raises(UntrustedCodeError):
            model_spec_for(manifest)
        assert model_spec_for(manifest, trust_code=True) == spec
        assert model_spec_for(manifest, model="efficientnet-lite0") == "efficientnet-lite0"


@pytest.mark.parametrize("value", ["0", "", "no", "false"])
def test_env_values_that_do_not_opt_in(monkeypatch, value) -> None:
    monkeypatch.setenv(TRUST_ENV, value)
    with pytest.raises(UntrustedCodeError):
        model_spec_for(SimpleNamespace(model_spec="payload.py:make", model_name="x"))


def test_built_in_names_are_ours(untrusted) -> None:
    assert model_spec_for(SimpleNamespace(model_spec="efficientnet-lite0", model_name="x")) == "efficientnet-lite0"
    assert model_spec_for(SimpleNamespace(model_spec=None, model_name="efficientnet-lite0")) == "efficientnet-lite0"
