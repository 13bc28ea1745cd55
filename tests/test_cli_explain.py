"""`opticam-rt explain` on image files of every kind, and the demo.

Most tests use the tiny net of tests/tiny_runtime_net.py (exported once per session, shared
with tests/runtime); the demo uses the session's EfficientNet-Lite0 bundle (slow).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from opticam_rt.cli import cli, main
from opticam_rt.runtime import METHOD_NAMES

#: Identical pixels explained at different positions of one ONNX Runtime batch: the maps agree
#: to float32 rounding (~1e-7 seen), not bit for bit.
SAME_PIXELS_MAP_ATOL = 1e-6

RECORD_KEYS = {"image", "method", "target", "class_name", "score", "masked_score", "seconds", "map", "overlay"}


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    from opticam_rt.images import sample_photos

    photos = sample_photos()
    if "chelsea" not in photos:
        pytest.skip("needs scikit-image's sample photos")
    return photos["chelsea"]  # (300, 451, 3)


def run_ok(*args: str) -> list[dict] | str:
    """Invoke the CLI expecting success; JSON output is parsed."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "json" in args else result.stdout


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """The console entry point (``opticam_rt.cli.main``) -> (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["opticam-rt", *args])
    with pytest.raises(SystemExit) as info:
        main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def explain_args(bundle_dir: str, out: Path, *images: Path | str, method: str = "grad-cam") -> list[str]:
    return ["explain", *map(str, images), "--bundle", bundle_dir, "--method", method, "--backend", "ort-cpu",
            "--out", str(out), "--format", "json"]


def test_photo_formats(bundle_dir, chelsea, tmp_path):
    paths = []
    for ext, kwargs in ((".jpg", {"quality": 95}), (".png", {}), (".webp", {"quality": 95}), (".bmp", {})):
        path = tmp_path / f"chelsea{ext}"
        Image.fromarray(chelsea).save(path, **kwargs)
        paths.append(path)
    records = run_ok(*explain_args(bundle_dir, tmp_path / "out", *paths))
    assert [r["image"] for r in records] == [str(p) for p in paths]
    maps = []
    for r in records:
        assert RECORD_KEYS <= set(r), set(r)
        assert r["method"] == "grad-cam" and r["backend"] == "ort-cpu"
        assert r["class_name"] == f"class-{r['target']}" and 0 < r["score"] <= 1 and 0 <= r["masked_score"] <= 1
        # seconds: the image's share of its batch; the batch's time and size beside it
        assert r["seconds"] > 0 and r["batch_images"] == len(paths)
        assert r["seconds"] == pytest.approx(r["batch_seconds"] / r["batch_images"])
        saliency = np.load(r["map"])
        assert saliency.dtype == np.float32 and saliency.shape == (32, 32)
        assert 0 <= saliency.min() and saliency.max() <= 1
        maps.append(saliency)
        with Image.open(r["overlay"]) as img:
            assert img.format == "PNG" and img.size == (451, 300) and img.mode == "RGB"
    # lossless formats give the same map; lossy ones nearly the same
    np.testing.assert_allclose(maps[1], maps[3], rtol=0, atol=SAME_PIXELS_MAP_ATOL)
    for lossy in (maps[0], maps[2]):
        assert np.corrcoef(lossy.ravel(), maps[1].ravel())[0, 1] > 0.95
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"chelsea{suffix}.grad-cam.{kind}" for suffix in ("", "-2", "-3", "-4") for kind in ("npy", "png"))


def test_grayscale_and_rgba(bundle_dir, chelsea, tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(chelsea).convert("L").save(gray)
    # RGBA with its left half transparent: read as composited over white, i.e. equal to `white.png`
    rgba = np.concatenate([chelsea, np.full(chelsea.shape[:2] + (1,), 255, np.uint8)], axis=2)
    rgba[:, : rgba.shape[1] // 2, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    white = chelsea.copy()
    white[:, : white.shape[1] // 2] = 255
    Image.fromarray(white).save(tmp_path / "white.png")
    records = run_ok(*explain_args(bundle_dir, tmp_path / "out", gray, tmp_path / "alpha.png", tmp_path / "white.png"))
    assert len(records) == 3 and all("error" not in r for r in records)
    with Image.open(records[0]["overlay"]) as img:
        assert img.mode == "RGB" and img.size == (451, 300)
    np.testing.assert_allclose(np.load(records[1]["map"]), np.load(records[2]["map"]), rtol=0, atol=SAME_PIXELS_MAP_ATOL)
    assert records[1]["score"] == pytest.approx(records[2]["score"])


def test_16bit_grayscale_png_is_rescaled_not_clipped(bundle_dir, chelsea, tmp_path):
    """A 16-bit PNG (mode I;16) reads as its 8-bit equivalent, not as a saturated white image."""
    gray8 = np.asarray(Image.fromarray(chelsea).convert("L"))
    Image.fromarray(gray8).save(tmp_path / "gray8.png")
    Image.fromarray(gray8.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    with Image.open(tmp_path / "gray16.png") as img:
        assert img.mode.startswith("I")
    records = run_ok(*explain_args(bundle_dir, tmp_path / "out", tmp_path / "gray8.png", tmp_path / "gray16.png"))
    np.testing.assert_allclose(np.load(records[0]["map"]), np.load(records[1]["map"]), rtol=0, atol=SAME_PIXELS_MAP_ATOL)
    assert records[1]["score"] == pytest.approx(records[0]["score"])


def test_exif_orientation_is_applied(bundle_dir, chelsea, tmp_path):
    """A 40x20 (W x H) file with EXIF orientation 6 is displayed, and explained, as 20x40."""
    stored = Image.fromarray(chelsea).resize((40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    upright = Image.open(tmp_path / "rotated.jpg").transpose(Image.Transpose.ROTATE_270)  # decoded pixels, turned
    upright.save(tmp_path / "upright.png")
    records = run_ok(*explain_args(bundle_dir, tmp_path / "out", tmp_path / "rotated.jpg", tmp_path / "upright.png"))
    with Image.open(records[0]["overlay"]) as img:
        assert img.size == (20, 40)
    np.testing.assert_allclose(np.load(records[0]["map"]), np.load(records[1]["map"]), rtol=0, atol=SAME_PIXELS_MAP_ATOL)


def test_corrupt_file_among_good_ones(bundle_dir, chelsea, tmp_path, monkeypatch, capsys):
    good = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in good:
        Image.fromarray(chelsea).save(path)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    missing = tmp_path / "missing.png"
    code, out, err = run_main(monkeypatch, capsys, *explain_args(bundle_dir, tmp_path / "out", good[0], bad, missing, good[1]))
    assert code == 1
    records = json.loads(out)
    assert [r["image"] for r in records] == [str(good[0]), str(bad), str(missing), str(good[1])]
    assert "error" not in records[0] and "error" not in records[3]
    assert Path(records[0]["overlay"]).is_file() and Path(records[3]["map"]).is_file()
    assert str(bad) in records[1]["error"] and "not a readable image" in records[1]["error"]
    assert str(missing) in records[2]["error"]
    assert f"error: {bad}" in err and "2 of 4 images failed" in err


def test_target_out_of_range(bundle_dir, chelsea, tmp_path, monkeypatch, capsys):
    path = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(path)
    code, out, err = run_main(monkeypatch, capsys, *explain_args(bundle_dir, tmp_path / "out", path), "--target", "5000")
    assert code == 1
    assert "target class 5000 is out of range" in err and "0..6" in err
    assert json.loads(out) == [{"image": str(path), "error": json.loads(out)[0]["error"]}]
    assert not (tmp_path / "out").exists()


def test_explicit_target(bundle_dir, chelsea, tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(path)
    records = run_ok(*explain_args(bundle_dir, tmp_path / "out", path), "--target", "3")
    assert records[0]["target"] == 3 and records[0]["class_name"] == "class-3"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--target", "cat"), "'top1' or a class index"),
        (("--backend", "ort-cuda"), "pip install"),
    ],
    ids=("bad-target", "gpu-backend"),
)
def test_errors_exit_2(args, needle, bundle_dir, chelsea, tmp_path, monkeypatch, capsys):
    path = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(path)
    code, _, err = run_main(monkeypatch, capsys, *explain_args(bundle_dir, tmp_path / "out", path), *args)
    assert code == 2
    assert err.startswith("error: ") and needle in err and "Traceback" not in err


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method(method, bundle_dir, chelsea, tmp_path):
    paths = [tmp_path / "a.png", tmp_path / "b.jpg"]
    Image.fromarray(chelsea).save(paths[0])
    Image.fromarray(chelsea[::-1]).save(paths[1])
    extra = ["--iterations", "3"] if method.endswith("opti-cam") or method == "extremal-perturbation" else []
    records = run_ok(*explain_args(bundle_dir, tmp_path / "out", *paths, method=method), *extra, "--batch-size", "1")
    assert len(records) == 2
    for r in records:
        assert r["method"] == method and Path(r["overlay"]).is_file()
        saliency = np.load(r["map"])
        assert saliency.shape == (32, 32) and saliency.dtype == np.float32
        assert saliency.min() >= 0 and saliency.max() <= 1 and saliency.max() > saliency.min()
        if method == "opti-cam":
            assert r["iterations"] == r["steps"] == 3 and np.isfinite(r["final_loss"])


def test_opticam_options_reach_the_method(bundle_dir, chelsea, tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(chelsea).save(path)
    base = [*explain_args(bundle_dir, tmp_path / "out", path, method="opti-cam"), "--overwrite"]
    fused = run_ok(*base, "--iterations", "4")[0]
    split = run_ok(*base, "--iterations", "4", "--pipeline", "split")[0]
    assert fused["iterations"] == 4 and split["iterations"] == 4
    assert split["final_loss"] == pytest.approx(fused["final_loss"], rel=1e-4)
    stopped = run_ok(*base, "--iterations", "60", "--tol", "0.5")[0]
    assert stopped["iterations"] == 60 and stopped["steps"] < 60


def test_text_format(bundle_dir, chelsea, tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(path)
    text = run_ok("explain", str(path), "--bundle", bundle_dir, "--method", "grad-cam", "--out", str(tmp_path / "o"))
    assert f"{path}: class-" in text and "masked p=" in text and str(tmp_path / "o" / "cat.grad-cam.png") in text
    assert "steps" not in text and "s/image" in text


def test_text_format_shows_the_steps_taken(bundle_dir, chelsea, tmp_path):
    path = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(path)
    text = run_ok("explain", str(path), "--bundle", bundle_dir, "--method", "opti-cam", "--iterations", "60",
                  "--tol", "0.5", "--out", str(tmp_path / "o"))
    steps, budget = text.split(" steps")[0].rsplit(" ", 1)[1].split("/")
    assert budget == "60" and 1 <= int(steps) < 60, text


# --- demo ------------------------------------------------------------------------------------


@pytest.fixture
def demo_cache(effnet_bundle, tmp_path, monkeypatch) -> Path:
    """$OPTICAM_RT_CACHE holding a copy of the session's EfficientNet bundle (no re-export)."""
    cache = tmp_path / "cache"
    shutil.copytree(effnet_bundle[0].path, cache / "efficientnet-lite0")
    monkeypatch.setenv("OPTICAM_RT_CACHE", str(cache))
    return cache


@pytest.mark.slow
def test_demo(demo_cache, tmp_path):
    from opticam_rt.demo import DEMO_METHODS, run_demo
    from opticam_rt.images import sample_photos

    photos = sample_photos()
    messages: list[str] = []
    result = run_demo(tmp_path / "demo", backend="ort-cpu", method_options={"opti-cam": {"iterations": 3}}, log=messages.append)
    assert not any("exporting" in m for m in messages), messages  # the cached copy was used
    assert len(result.overlays) == len(photos) * len(DEMO_METHODS) == len(result.rows)
    for path in result.overlays:
        name = path.name.split(".")[0]
        with Image.open(path) as img:
            assert img.size == photos[name].shape[1::-1]
        saliency = np.load(path.with_suffix(".npy"))
        assert saliency.shape == (224, 224) and saliency.dtype == np.float32
    with Image.open(result.comparison) as img:
        width, height = img.size
    # equal square cells at 100 dpi: photo | grad-cam | opti-cam, one row per photo
    from opticam_rt.comparison import CELL_INCHES

    assert result.titled
    assert (width, height) == (round(3 * CELL_INCHES * 100), round((len(photos) * CELL_INCHES + 0.5) * 100))
    assert set(result.top) == set(photos) and all(len(t) == 3 for t in result.top.values())
    for classes in result.top.values():
        assert [c["p"] for c in classes] == sorted((c["p"] for c in classes), reverse=True)
    opti = [r for r in result.rows if r["method"] == "opti-cam"]
    assert opti and all(r["iterations"] == 3 for r in opti)
    # the demo's photos are recognised: chelsea is a cat (ImageNet 281-285)
    chelsea = next(r for r in result.rows if r["image"] == "chelsea")
    assert 281 <= chelsea["target"] <= 285, chelsea


@pytest.mark.slow
def test_demo_command_json(demo_cache, tmp_path):
    out = tmp_path / "demo"
    data = run_ok("demo", "--out", str(out), "--backend", "ort-cpu", "--iterations", "1", "--format", "json")
    assert Path(data["comparison"]).is_file()
    assert {r["method"] for r in data["results"]} == {"grad-cam", "opti-cam"}


def test_opticam_shows_a_bar_of_its_steps(bundle_dir, chelsea, tmp_path, monkeypatch, capsys):
    """Two photos with Opti-CAM were silent for 30 s (the per-image bar is off for <= 3 images)."""
    path = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(path)
    args = explain_args(bundle_dir, tmp_path / "out", path, method="opti-cam")
    code, _, err = run_main(monkeypatch, capsys, *args, "--iterations", "7")
    assert code == 0, err
    assert "opti-cam steps" in err and "/7 [" in err  # tqdm: 1 image x 7 steps
    code, _, err = run_main(monkeypatch, capsys, *explain_args(bundle_dir, tmp_path / "g", path))
    assert code == 0 and "steps" not in err  # Grad-CAM is one pass: no step bar
