"""Issue 21 (reliability round 3): defects of `explain`, `demo`, `sanity` and `evaluate` outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from opticam_rt.cli import EXIT_ERROR, EXIT_SOME_FAILED
from cli_run import run_main



def photo_at(path: Path, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def explain_args(bundle_dir: str, out: Path, *images: object) -> list[object]:
    return ["explain", *images, "--bundle", bundle_dir, "--method", "grad-cam", "--backend", "ort-cpu",
            "--out", out, "--format", "json"]


# --- defect 3: a file name that cannot be written is that image's error -----------------------


def test_defect3_long_names(bundle_dir, tmp_path, monkeypatch, capsys):
    """230 characters: the outputs fit the 255-byte limit (their temporary names used not to);
    245: the outputs cannot exist, which is that image's one-line error; the rest are written."""
    images = tmp_path / "images"
    images.mkdir()
    fits = photo_at(images / ("f" * 230 + ".png"))
    too_long = photo_at(images / ("t" * 245 + ".png"), 1)
    after = photo_at(images / "after.png", 2)
    out = tmp_path / "out"
    code, stdout, err = run_main(monkeypatch, capsys, *explain_args(bundle_dir, out, fits, too_long, after))
    records = json.loads(stdout)
    assert code == EXIT_SOME_FAILED, err
    assert Path(records[0]["map"]).is_file() and Path(records[0]["overlay"]).is_file()
    assert "error" in records[1] and "too long" in records[1]["error"].lower()
    assert Path(records[2]["map"]).is_file() and Path(records[2]["overlay"]).is_file()
    assert [line for line in err.splitlines() if line.startswith("error:")] == [f"error: {records[1]['error']}"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_defect3_write_that_fails_on_the_temporary_name_is_one_image_error(bundle_dir, tmp_path, monkeypatch, capsys):
    """An OSError while creating the temporary file (not only while writing it) is an OutputError."""
    import tempfile

    from opticam_rt import outputs

    real = tempfile.mkstemp

    def failing(*args, **kwargs):
        if "first" in kwargs.get("prefix", ""):
            raise OSError(36, "File name too long")
        return real(*args, **kwargs)

    monkeypatch.setattr(outputs.tempfile, "mkstemp", failing)
    first, second = photo_at(tmp_path / "first.png"), photo_at(tmp_path / "second.png", 1)
    code, stdout, _ = run_main(monkeypatch, capsys, *explain_args(bundle_dir, tmp_path / "out", first, second))
    records = json.loads(stdout)
    assert code == EXIT_SOME_FAILED
    assert "File name too long" in records[0]["error"] and Path(records[1]["map"]).is_file()


# --- defect 4: a bad box is that image's error, naming the CSV line ----------------------------


def test_defect4_bad_boxes_are_per_image_errors(bundle_dir, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("good", "outside", "vanishes", "infinite", "huge"):
        Image.fromarray(np.random.default_rng(len(name)).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(
            folder / f"{name}.png")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,label,x0,y0,x1,y1\n"
                     "images/good.png,,10,10,200,200\n"
                     "images/outside.png,,400,400,500,500\n"   # beyond the 300 x 300 photo
                     "images/vanishes.png,,0,0,1,1\n"          # under a pixel at 32 x 32
                     "images/infinite.png,,0,0,inf,20\n"
                     "images/huge.png,,0,0,1e300,20\n")
    code, out, err = run_main(monkeypatch, capsys, "evaluate", folder, "--bundle", bundle_dir, "--methods", "grad-cam",
                              "--backend", "ort-cpu", "--metrics", "om,sp", "--boxes", boxes, "--format", "json",
                              "--records", tmp_path / "r.jsonl")
    assert code == EXIT_SOME_FAILED, err
    skipped = [line for line in err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 4, err
    assert any(f"{boxes}:3:" in s and "outside" in s for s in skipped)
    assert any(f"{boxes}:4:" in s and "no pixel" in s for s in skipped)
    assert any(f"{boxes}:5:" in s and "finite" in s for s in skipped)
    assert any(f"{boxes}:6:" in s and "finite" in s and "1e300" in s and len(s) < 300 for s in skipped)
    assert json.loads(out)["grad-cam"]["n_images"] == 1


# --- defect 7: one path for two outputs is refused before any work ---------------------------


@pytest.fixture
def two_photos(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        photo_at(folder / f"p{i}.png", i)
    return folder


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("pair", [("--out", "--records"), ("--out", "--plot"), ("--plot", "--records")])
def test_defect7_same_path_for_two_outputs_is_refused(bundle_dir, two_photos, tmp_path, monkeypatch, capsys, pair,
                                                       overwrite):
    records = tmp_path / "r.jsonl"
    records.write_text('{"method": "grad-cam", "image": "earlier"}\n')
    before = records.read_text()
    paths = {"--records": tmp_path / "other.jsonl", "--out": tmp_path / "report.txt", "--plot": tmp_path / "c.png"}
    paths.update({pair[0]: records, pair[1]: records})
    args = [a for option, path in paths.items() for a in (option, path)]
    code, _, err = run_main(monkeypatch, capsys, "evaluate", two_photos, "--bundle", bundle_dir, "--methods", "grad-cam",
                            "--metrics", "ad", *args, *(["--overwrite"] if overwrite else []))
    assert code == EXIT_ERROR
    assert err.count("\n") == 1 and f"{pair[0]} and {pair[1]} both name {records}" in err, err
    assert records.read_text() == before


def test_defect7_output_over_an_input_is_refused(bundle_dir, two_photos, tmp_path, monkeypatch, capsys):
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("path,label,x0,y0,x1,y1\n")
    code, _, err = run_main(monkeypatch, capsys, "evaluate", two_photos, "--bundle", bundle_dir, "--methods", "grad-cam",
                            "--boxes", boxes, "--out", boxes, "--overwrite", "--records", tmp_path / "r.jsonl")
    assert code == EXIT_ERROR and "is the input --boxes" in err
    assert boxes.read_text() == "path,label,x0,y0,x1,y1\n"


# --- defect 6: demo and sanity never replace a file without --overwrite, checked before work ---


@pytest.fixture
def tiny_demo(bundle_dir, monkeypatch):
    """The demo on the tiny bundle and two small photos; records whether the bundle was asked for."""
    from opticam_rt import demo
    from opticam_rt.bundle import load_bundle

    asked = []

    def bundle(log=None):
        asked.append(1)
        return load_bundle(bundle_dir)

    rng = np.random.default_rng(0)
    monkeypatch.setattr(demo, "builtin_bundle", bundle)
    monkeypatch.setattr(demo, "sample_photos", lambda: {n: rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
                                                        for n in ("one", "two")})
    return asked


def test_defect6_demo_refuses_to_replace_an_earlier_result(tiny_demo, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "one.grad-cam.npy"
    np.save(earlier, np.full((2, 2), 7.0, np.float32))  # e.g. written by `explain`
    before = earlier.read_bytes()
    args = ["demo", "--out", out, "--backend", "ort-cpu", "--iterations", "2", "--format", "json"]
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == EXIT_ERROR and err.count("\n") == 1 and str(earlier) in err and "--overwrite" in err
    assert earlier.read_bytes() == before and tiny_demo == []  # refused before any work
    assert sorted(p.name for p in out.iterdir()) == ["one.grad-cam.npy"]
    code, stdout, err = run_main(monkeypatch, capsys, *args, "--overwrite")
    assert code == 0, err
    assert np.load(earlier).shape == (32, 32) and json.loads(stdout)["results"]


def test_defect6_demo_twice_refuses_the_second(tiny_demo, tmp_path, monkeypatch, capsys):
    args = ["demo", "--out", tmp_path / "out", "--backend", "ort-cpu", "--iterations", "2"]
    assert run_main(monkeypatch, capsys, *args)[0] == 0
    written = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert "comparison.png" in written and len(written) == 9
    code, _, err = run_main(monkeypatch, capsys, *args)
    assert code == EXIT_ERROR and "exists" in err
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == written


@pytest.fixture
def no_model(monkeypatch):
    """Sanity's model loading replaced by a recorder: the refusals must come before it."""
    from opticam_rt.evaluation import sanity

    calls = []
    monkeypatch.setattr(sanity.SanityModel, "load", classmethod(lambda cls, *a, **k: calls.append(1) or 1 / 0))
    return calls


@pytest.mark.parametrize("check", ["wall", "randomisation"])
@pytest.mark.parametrize("option", ["--out", "--plot"])
def test_defect6_sanity_refuses_an_existing_out_or_plot_before_work(no_model, tmp_path, monkeypatch, capsys, check,
                                                                     option):
    photo = photo_at(tmp_path / "p.png")
    notes = tmp_path / ("notes.txt" if option == "--out" else "plot.png")
    notes.write_text("my notes")
    code, _, err = run_main(monkeypatch, capsys, "sanity", check, photo, "--model", "efficientnet-lite0",
                            option, notes, "--records", tmp_path / "r.jsonl")
    assert code == EXIT_ERROR and err.count("\n") == 1 and str(notes) in err and "--overwrite" in err
    assert notes.read_text() == "my notes" and no_model == []


def test_defect6_sanity_checks_its_out_folder_before_work(no_model, tmp_path, monkeypatch, capsys):
    photo = photo_at(tmp_path / "p.png")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_main(monkeypatch, capsys, "sanity", "wall", photo, "--model", "efficientnet-lite0",
                            "--out", blocker / "report.txt")
    assert code == EXIT_ERROR and "--out" in err and "cannot write" in err and no_model == []


def test_defect6_sanity_plots_are_atomic_and_refuse_to_replace(tmp_path):
    pytest.importorskip("matplotlib")
    from opticam_rt.errors import OutputError
    from opticam_rt.evaluation.sanity import plot_wall

    summary = {"grad-cam": {"hidden_mass": 0.1, "hidden_peak": 0.0, "hidden_area": 0.25}}
    path = tmp_path / "w.png"
    path.write_text("earlier")
    with pytest.raises(OutputError, match="exists"):
        plot_wall(summary, path)
    assert path.read_text() == "earlier"
    plot_wall(summary, path, overwrite=True)
    assert path.read_bytes().startswith(b"\x89PNG") and sorted(p.name for p in tmp_path.iterdir()) == ["w.png"]


# --- defect 5: SIGTERM like Ctrl-C; an image's outputs as a unit; stale temporaries cleaned ----


def _dead_pid() -> int:
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_defect5_sigterm_mid_explain_keeps_whole_images_only(bundle_dir, tmp_path):
    """SIGTERM while `explain` writes: a one-line message, exit 143, no temporaries, and every
    image written has both files; the rerun completes the rest."""
    import os
    import signal
    import subprocess
    import time

    images = tmp_path / "images"
    images.mkdir()
    paths = [photo_at(images / f"p{i:02d}.png", i) for i in range(40)]
    out = tmp_path / "out"
    code = "import sys; from opticam_rt.cli import main; sys.argv = ['opticam-rt', *sys.argv[1:]]; main()"
    args = [sys.executable, "-c", code, "explain", *map(str, paths), "--bundle", bundle_dir, "--method", "opti-cam",
            "--iterations", "60", "--backend", "ort-cpu", "--batch-size", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 2 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    names = {p.name for p in out.iterdir()}
    assert not [n for n in names if n.endswith(".tmp")], names
    npy = {n[: -len(".opti-cam.npy")] for n in names if n.endswith(".npy")}
    png = {n[: -len(".opti-cam.png")] for n in names if n.endswith(".png")}
    assert npy == png and 2 <= len(npy) < 40
    rerun = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 1  # the images already written are refused ("exists"), the others done
    assert len(list(out.glob("*.npy"))) == len(list(out.glob("*.png"))) == 40


def test_defect5_outputs_are_a_unit(tmp_path, monkeypatch):
    """When the second file of a unit cannot be put in place, the first is taken back."""
    from opticam_rt import outputs
    from opticam_rt.errors import OutputError

    real = outputs._link_new

    def link(tmp, path):
        if path.suffix == ".png":
            raise OSError(28, "No space left on device")
        real(tmp, path)

    monkeypatch.setattr(outputs, "_link_new", link)
    with pytest.raises(OutputError, match="a.png.*No space"):
        outputs.write_files([(tmp_path / "a.npy", lambda f: f.write(b"1")), (tmp_path / "a.png", lambda f: f.write(b"2"))])
    assert list(tmp_path.iterdir()) == []


def test_defect5_interrupt_between_files_leaves_neither(tmp_path):
    from opticam_rt import outputs
    from opticam_rt.errors import Terminated

    def killed(f):
        raise Terminated

    with pytest.raises(Terminated):
        outputs.write_files([(tmp_path / "a.npy", lambda f: f.write(b"1")), (tmp_path / "a.png", killed)])
    assert list(tmp_path.iterdir()) == []


def test_defect5_stale_temporaries_are_cleaned_live_ones_kept(bundle_dir, tmp_path, monkeypatch, capsys):
    from opticam_rt.outputs import owner_tag

    out = tmp_path / "out"
    out.mkdir()
    host = owner_tag().rpartition(".")[0]
    dead = out / f".p.grad-cam.npy.{host}.{_dead_pid()}.abc_1234.tmp"
    live = out / f".p.grad-cam.png.{owner_tag()}.zz9_0000.tmp"
    other_host = out / f".p.grad-cam.png.elsewhere{host}.1.abcdefgh.tmp"
    mine = out / ".notes.tmp"  # not an opticam temporary
    for p in (dead, live, other_host, mine):
        p.write_bytes(b"partial")
    code, _, err = run_main(monkeypatch, capsys, *explain_args(bundle_dir, out, photo_at(tmp_path / "p.png")))
    assert code == 0, err
    assert not dead.exists() and live.exists() and other_host.exists() and mine.exists()


def test_defect5_sigterm_during_export_removes_the_staging_folder(tmp_path):
    import signal

    from opticam_rt.errors import Terminated
    from opticam_rt.export import staging

    target = tmp_path / "bundle"
    folder = staging.make_staging(target)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        try:
            with staging.interrupt_guard() as flag:
                (folder / "forward.onnx").write_bytes(b"x" * 100)
                handler = signal.getsignal(signal.SIGTERM)
                assert callable(handler) and handler is not before  # the guard's own
                # The handler as the signal would run it. A real os.kill on the test process
                # crashed the whole suite (rc 139) when a library's handler was in place.
                handler(signal.SIGTERM, None)
        finally:
            staging.remove_staging(folder)
    assert isinstance(flag.requested, Terminated)
    assert signal.getsignal(signal.SIGTERM) is before and list(tmp_path.iterdir()) == []


def test_defect5_stale_staging_folder_of_a_killed_export_is_removed(tmp_path):
    from opticam_rt.export import staging
    from opticam_rt.outputs import owner_tag

    host = owner_tag().rpartition(".")[0]
    stale = tmp_path / f"{staging.STAGING_PREFIX}bundle-{host}.{_dead_pid()}-abcd1234"
    (stale / "sub").mkdir(parents=True)
    (stale / "weights.bin").write_bytes(b"0" * 1000)
    running = tmp_path / f"{staging.STAGING_PREFIX}other-{owner_tag()}-zzzz0000"
    running.mkdir()
    new = staging.make_staging(tmp_path / "bundle")
    assert not stale.exists() and running.exists() and new.is_dir()
    assert new.name.startswith(f"{staging.STAGING_PREFIX}bundle-{owner_tag()}-")


# --- defect 10: the smaller ones -----------------------------------------------------------------


def test_defect10_outputs_and_bundles_follow_the_umask(bundle_dir, tmp_path, monkeypatch, capsys):
    import os

    from opticam_rt.export import staging

    old = os.umask(0o022)
    try:
        code, stdout, err = run_main(monkeypatch, capsys, *explain_args(bundle_dir, tmp_path / "out",
                                                                        photo_at(tmp_path / "p.png")))
        assert code == 0, err
        record = json.loads(stdout)[0]
        assert {os.stat(record[k]).st_mode & 0o777 for k in ("map", "overlay")} == {0o644}
        assert os.stat(staging.make_staging(tmp_path / "bundle")).st_mode & 0o777 == 0o755
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def tiny_explainer(tmp_path_factory):
    import tiny_runtime_net

    from opticam_rt.runtime import Explainer

    bundle = tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp())
    with Explainer(bundle, backend="ort-cpu", threads=1) as e:
        yield e


@pytest.mark.parametrize(("images", "message"), [
    (np.full((1, 3, 32, 32), "x"), "real numbers"),
    (np.full((1, 3, 32, 32), 0.5, dtype=object), "real numbers"),
    (np.full((1, 3, 32, 32), 0.5, dtype=np.complex64), "real numbers"),  # passed with a ComplexWarning
    (np.zeros((0, 3, 32, 32), np.float32), "empty batch"),  # named the wrong K
])
def test_defect10_images_that_are_not_pixels(tiny_explainer, images, message):
    from opticam_rt.errors import InputError

    for method in ("grad-cam", "opti-cam"):
        with pytest.raises(InputError, match=message):
            tiny_explainer.explain(images, method, iterations=1) if method == "opti-cam" else tiny_explainer.explain(images, method)


@pytest.mark.parametrize("targets", ["abc", True, [True, 2], [None, 1], np.array([True, False]), [1.5, 2]])
def test_defect10_targets_that_are_not_class_indices(tiny_explainer, targets):
    from opticam_rt.errors import InputError

    images = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    with pytest.raises(InputError, match="targets|target class"):
        tiny_explainer.explain(images, "grad-cam", targets=targets)
    assert tiny_explainer.explain(images, "grad-cam", targets=[1, 2.0]).targets.tolist() == [1, 2]


def test_defect10_deeply_nested_record_is_a_damaged_line(tmp_path):
    from opticam_rt.errors import InputError
    from opticam_rt.evaluation.records import RecordStore

    path = tmp_path / "r.jsonl"
    path.write_text('{"method": "m", "image": "a"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(InputError, match=r"r\.jsonl:2: .*nested too deeply"):
        RecordStore(path).records()


def test_defect10_disk_full_on_records_names_the_file():
    from opticam_rt.errors import OutputError
    from opticam_rt.evaluation.records import RecordStore

    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    with pytest.raises(OutputError, match="--records /dev/full: cannot write"):
        RecordStore("/dev/full").append({"method": "m", "image": "a", "AD": 1.0})


def test_defect10_csv_report_counts_images_as_integers():
    from opticam_rt.evaluation import aggregate, format_report

    summary = aggregate([{"method": "m", "image": i, "AD": 1.5} for i in "ab"])
    text = format_report(summary, "csv", ["n_images", "AD"])
    assert text.splitlines()[1] == "m,2,1.5"
    assert json.loads(format_report(summary, "json", ["n_images"]))["m"]["n_images"] == 2
    assert '"n_images": 2,' in format_report(summary, "json", ["n_images", "AD"])


def test_defect5_a_map_without_its_overlay_is_named_as_such(bundle_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "p.grad-cam.npy", np.zeros((32, 32), np.float32))  # as a SIGKILL between the two files left it
    code, stdout, _ = run_main(monkeypatch, capsys, *explain_args(bundle_dir, out, photo_at(tmp_path / "p.png")))
    assert code == EXIT_SOME_FAILED
    error = json.loads(stdout)[0]["error"]
    assert "without its p.grad-cam.png" in error and "--overwrite" in error
    code, stdout, _ = run_main(monkeypatch, capsys, *explain_args(bundle_dir, out, tmp_path / "p.png"), "--overwrite")
    assert code == 0 and (out / "p.grad-cam.png").is_file()
