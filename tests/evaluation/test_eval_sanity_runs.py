"""Both sanity checks end to end on a tiny net: exported bundles, reports, resuming, and the CLI's JSON.

The derived bundles are cached in a module-wide temporary cache, so the CLI tests reuse the
exports of the library tests (three tiny exports in all).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tiny_runtime_net as tiny
from opticam_rt.bundle import load_bundle
from opticam_rt.cli import cli
from opticam_rt.evaluation.sanity import (
    CONTROL,
    RandomisationSettings,
    SanityModel,
    SanityRecords,
    WallSettings,
    hidden_mass,
    randomised,
    run_randomisation,
    run_wall,
    summarise_randomisation,
    summarise_wall,
)
from opticam_rt.evaluation.sanity.wall import hidden_mask, parse_region
from opticam_rt.runtime.explainer import Explainer

SPEC = f"{Path(tiny.__file__).resolve()}:make"


@pytest.fixture(scope="module")
def sanity_cache(tmp_path_factory):
    """A private bundle cache for this module (the user's cache is never touched)."""
    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("sanity-cache")
        mp.setenv("OPTICAM_RT_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def model() -> SanityModel:
    return SanityModel.load(SPEC, layer=tiny.TAP, input_size=tiny.INPUT_SIZE, mean=tiny.MEAN, std=tiny.STD)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {f"img{i}": rng.random((3, *tiny.INPUT_SIZE)).astype(np.float32) for i in range(3)}


def _only(cache: Path, pattern: str) -> Path:
    found = sorted(cache.glob(pattern))
    assert len(found) == 1, found
    return found[0]


def test_wall_report_on_tiny_net(sanity_cache, model, images, tmp_path) -> None:
    store = SanityRecords(tmp_path / "wall.jsonl")
    settings = WallSettings(methods=["grad-cam", "opti-cam", "fake-cam"], method_options={"opti-cam": {"iterations": 5}},
                            backend="ort-cpu")
    records = run_wall(model, images, settings, store)
    summary = summarise_wall(records)
    assert list(summary) == ["grad-cam", "opti-cam", "fake-cam", CONTROL]
    assert summary[CONTROL]["hidden_mass"] == 0.0 and summary[CONTROL]["hidden_peak"] == 0.0
    for entry in summary.values():
        assert entry["n_images"] == 3 and entry["hidden_area"] == 0.5
        assert 0.0 <= entry["hidden_mass"] <= 1.0

    # The exported graph itself hides the region, and the records measure the bundle's own maps.
    hidden = hidden_mask(parse_region("lower"), tiny.INPUT_SIZE)
    stack = np.stack(list(images.values()))
    scrambled = np.where(hidden, np.random.default_rng(1).random(stack.shape), stack).astype(np.float32)
    walled = load_bundle(_only(sanity_cache, "make.wall-*"))
    assert walled.manifest.explainers == {}  # the checks run host loops: no explainer graph is exported
    assert not list(walled.path.glob("explain_*.onnx"))
    with Explainer(walled, backend="ort-cpu") as explainer:
        logits, _ = explainer.predict(stack)
        np.testing.assert_allclose(explainer.predict(scrambled)[0], logits, rtol=0, atol=1e-5)
        maps = explainer.explain(stack, method="grad-cam").maps
    assert [r["hidden_mass"] for r in records["grad-cam"]] == pytest.approx(hidden_mass(maps, hidden).tolist(), abs=1e-6)

    lines = len(store.read())
    assert lines == 4 * 3
    again = summarise_wall(run_wall(model, images, settings, store))
    assert len(store.read()) == lines and again == summary  # resumed: nothing recomputed


def test_randomisation_report_on_tiny_net(sanity_cache, model, images, tmp_path) -> None:
    store = SanityRecords(tmp_path / "rand.jsonl")
    settings = RandomisationSettings(methods=["grad-cam", "fake-cam"], cascade_text="fc", backend="ort-cpu")
    steps, records = run_randomisation(model, images, settings, store)
    summary = summarise_randomisation(steps, records)
    assert [s.modules for s in steps] == [("fc",)]
    assert summary["grad-cam"]["n_images"] == 3 and summary["grad-cam"]["steps"][0]["randomised"] == "fc"
    # Fake-CAM ignores the model: its maps cannot change; Grad-CAM's channel weights come from the classifier.
    assert summary["fake-cam"]["steps"][0]["spearman"] == pytest.approx(1.0)
    assert summary["fake-cam"]["steps"][0]["ssim"] == pytest.approx(1.0)
    assert summary["grad-cam"]["steps"][0]["ssim"] < 0.999

    # The step's bundle is the randomised PyTorch model.
    torch_model = randomised(model.build(), steps, seed=0)
    stack = np.stack(list(images.values()))
    mean = torch.tensor(tiny.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(tiny.STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch_model((torch.from_numpy(stack) - mean) / std).numpy()
    with Explainer(load_bundle(_only(sanity_cache, "make.random1-*")), backend="ort-cpu") as explainer:
        np.testing.assert_allclose(explainer.predict(stack)[0], expected, rtol=1e-4, atol=1e-4)

    lines = len(store.read())
    run_randomisation(model, images, settings, store)
    assert len(store.read()) == lines


def _photo_files(folder: Path, images: dict[str, np.ndarray]) -> list[str]:
    from PIL import Image

    paths = []
    for name, pixels in images.items():
        paths.append(folder / f"{name}.png")
        Image.fromarray((pixels.transpose(1, 2, 0) * 255).astype(np.uint8)).save(paths[-1])
    return [str(p) for p in paths]


def _model_args() -> list[str]:
    return ["--model", SPEC, "--layer", tiny.TAP, "--input-size", str(tiny.INPUT_SIZE[0]),
            "--mean", ",".join(map(str, tiny.MEAN)), "--std", ",".join(map(str, tiny.STD))]


def test_cli_wall_json(sanity_cache, images, tmp_path) -> None:
    """JSON keyed by method with the control under input-gradient; a broken image is skipped (exit 1)."""
    files = _photo_files(tmp_path, images)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    files.append(str(tmp_path / "broken.png"))
    result = CliRunner().invoke(cli, ["sanity", "wall", *files, *_model_args(), "--methods", "grad-cam,opti-cam",
                                      "--iterations", "3", "--backend", "ort-cpu", "--format", "json",
                                      "--records", str(tmp_path / "w.jsonl")], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "broken.png" in result.stderr
    payload = json.loads(result.stdout)
    assert list(payload) == ["grad-cam", "opti-cam", CONTROL]
    for entry in payload.values():
        assert {"hidden_mass", "hidden_peak", "hidden_area", "n_images"} <= set(entry) and entry["n_images"] == 3
    assert payload[CONTROL]["hidden_mass"] == 0
    # OpenVINO is offered too (it was not), and gives the same numbers as ONNX Runtime
    ov = CliRunner().invoke(cli, ["sanity", "wall", *files[:-1], *_model_args(), "--methods", "grad-cam",
                                  "--backend", "ov-cpu", "--format", "json", "--no-control",
                                  "--records", str(tmp_path / "w-ov.jsonl")], catch_exceptions=False)
    assert ov.exit_code == 0, ov.output
    assert json.loads(ov.stdout)["grad-cam"]["hidden_mass"] == pytest.approx(payload["grad-cam"]["hidden_mass"], abs=1e-4)
    page = tmp_path / "wall.html"
    html_run = CliRunner().invoke(cli, ["sanity", "wall", *files[:-1], *_model_args(), "--methods", "grad-cam",
                                        "--backend", "ov-cpu", "--no-control", "--records", str(tmp_path / "w-ov.jsonl"),
                                        "--html", str(page)], catch_exceptions=False)
    assert html_run.exit_code == 0, html_run.output
    text = page.read_text()
    import html as html_lib

    assert f"<pre>{html_lib.escape(html_run.stdout)}</pre>" in text  # the table as printed
    assert text.count('src="data:image/png;base64,') == 1  # the plot
    refused = CliRunner().invoke(cli, ["sanity", "wall", *files[:-1], *_model_args(), "--backend", "torch"])
    assert refused.exit_code == 2 and "'torch' is not one of" in refused.output


def test_cli_randomisation_json(sanity_cache, images, tmp_path) -> None:
    files = _photo_files(tmp_path, images)
    result = CliRunner().invoke(cli, ["sanity", "randomisation", *files, *_model_args(), "--methods", "grad-cam",
                                      "--cascade", "fc", "--backend", "ort-cpu", "--format", "json",
                                      "--records", str(tmp_path / "r.jsonl"), "--plot", str(tmp_path / "r.png")],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert list(payload) == ["grad-cam"] and payload["grad-cam"]["n_images"] == 3
    (step,) = payload["grad-cam"]["steps"]
    assert step["step"] == 1 and step["randomised"] == "fc" and -1 <= step["spearman"] <= 1 and 0 < step["ssim"] <= 1
    assert (tmp_path / "r.png").stat().st_size > 0
    assert len(list(sanity_cache.glob("make.*"))) == 3  # wall, original, step 1: the CLI reused them all


def test_cli_default_records_go_to_the_cache(sanity_cache, images, tmp_path, monkeypatch) -> None:
    """Without --records or --out, the records land in the cache, not in the current folder."""
    files = _photo_files(tmp_path, images)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(cli, ["sanity", "randomisation", *files, *_model_args(), "--methods", "grad-cam",
                                      "--cascade", "fc", "--backend", "ort-cpu", "--format", "json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert list(cwd.iterdir()) == []
    records = _only(sanity_cache / "records", "sanity-randomisation-*.records.jsonl")
    assert str(records) in result.stderr and "3 images x 1 method on" in result.stderr
