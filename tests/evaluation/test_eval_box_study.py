"""The box study (Opti-CAM paper, Figure 4): masks, rows, and `evaluate --box-study` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from opticam_rt.cli import cli
from opticam_rt.errors import InputError
from opticam_rt.evaluation.box_study import box_study_scores, box_study_summary
from opticam_rt.evaluation.records import RecordStore


def _quadrant_proba(batch: np.ndarray) -> np.ndarray:
    """Class 0's 'probability' = mean of channel 0 over the top-left 4 x 4; class 1 = the rest's mean."""
    a = batch[:, 0, :4, :4].mean((1, 2))
    b = (batch[:, 0].sum((1, 2)) - batch[:, 0, :4, :4].sum((1, 2))) / (64 - 16)
    return np.stack([a, b], 1)


def test_masks_keep_what_each_row_names():
    rng = np.random.default_rng(0)
    images = rng.uniform(0.2, 1, (2, 3, 8, 8)).astype(np.float32)
    maps = rng.uniform(0, 1, (2, 8, 8)).astype(np.float32)
    boxes = [[(0, 0, 4, 4)], [(0, 0, 4, 4)]]
    got = box_study_scores(images, maps, boxes, np.array([0, 1]), _quadrant_proba)
    x = images[:, 0]
    np.testing.assert_allclose(got["B"], [x[0, :4, :4].mean(), 0.0], atol=1e-6)  # class 1 lives outside B
    outside = np.ones((8, 8), bool)
    outside[:4, :4] = False
    np.testing.assert_allclose(got["I\\B"], [0.0, x[1][outside].mean()], atol=1e-6)
    np.testing.assert_allclose(got["B&S"], [(x[0] * maps[0])[:4, :4].mean(), 0.0], atol=1e-6)
    np.testing.assert_allclose(got["S\\B"], [0.0, (x[1] * maps[1])[outside].mean()], atol=1e-6)


def test_summary_rows_are_the_classification_metrics_of_each_masking():
    records = [
        {"method": "m", "image": "a", "p": 0.8, "o": 0.4, "box_study": {"B": 0.8, "I\\B": 0.2, "B&S": 0.9, "S\\B": 0.1}},
        {"method": "m", "image": "b", "p": 0.5, "o": 0.5, "box_study": {"B": 0.25, "I\\B": 0.5, "B&S": 0.5, "S\\B": 0.0}},
        {"method": "n", "image": "a", "p": 0.8, "o": 0.8, "box_study": {"B": 0.8, "I\\B": 0.2, "B&S": 0.8, "S\\B": 0.8}},
        {"method": "m", "image": "c", "p": 0.5, "o": 0.5},  # a record without the study is left out
    ]
    rows = box_study_summary(records, ["m", "n"])
    assert list(rows) == ["B", "I\\B", "m", "m B&S", "m S\\B", "n", "n B&S", "n S\\B"]
    # AD = mean(max(p - o, 0) / p) in percent; AI = share of o > p; AG = mean(max(o - p, 0) / (1 - p)).
    assert rows["B"]["AD"] == pytest.approx(100 * (0 + 0.5) / 2) and rows["B"]["n_images"] == 2
    assert rows["I\\B"]["AD"] == pytest.approx(100 * (0.75 + 0) / 2)
    assert rows["m"]["AD"] == pytest.approx(100 * 0.5 / 2)
    assert rows["m B&S"]["AI"] == pytest.approx(50.0) and rows["m B&S"]["AG"] == pytest.approx(100 * 0.5 / 2)
    assert rows["m S\\B"]["AD"] == pytest.approx(100 * (0.875 + 1.0) / 2)
    assert rows["n"]["n_images"] == 1 and rows["n"]["AD"] == 0


def test_evaluate_box_study_rows_match_masking_the_explainer_maps(bundle_dir, boxed_csv, tmp_path):
    records_path = tmp_path / "r.jsonl"
    args = ["evaluate", str(boxed_csv), "--bundle", bundle_dir, "--methods", "grad-cam,fake-cam", "--metrics", "ad,ag,ai",
            "--box-study", "--records", str(records_path), "--format", "json", "--backend", "ort-cpu"]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    study = report["box_study"]
    assert list(study) == ["B", "I\\B", "grad-cam", "grad-cam B&S", "grad-cam S\\B",
                           "fake-cam", "fake-cam B&S", "fake-cam S\\B"]
    assert study["grad-cam"]["AD"] == pytest.approx(report["metrics"]["grad-cam"]["AD"])
    # Recompute one image's B&S and S\B from the explainer's own map, independently of the runner.
    from opticam_rt.images import load_image
    from opticam_rt.runtime.explainer import Explainer

    with Explainer(bundle_dir, backend="ort-cpu") as ex:
        h, w = ex.input_size
        path = tmp_path / "im1.png"
        x = load_image(path, (h, w)).pixels[None]
        res = ex.explain(x, method="grad-cam", targets=[1])
        sx, sy = w / 64, h / 48
        inside = np.zeros((h, w), np.float32)
        inside[int(round(6 * sy)):int(round(30 * sy)), int(round(7 * sx)):int(round(41 * sx))] = 1
        want_in = ex.predict_proba(x * (res.maps[0] * inside)[None, None])[0, 1]
        want_out = ex.predict_proba(x * (res.maps[0] * (1 - inside))[None, None])[0, 1]
        want_box = ex.predict_proba(x * inside[None, None])[0, 1]
    rec = next(r for r in RecordStore(records_path).records() if r["method"] == "grad-cam" and r["image"].endswith("im1.png"))
    assert rec["box_study"]["B&S"] == pytest.approx(want_in, rel=1e-5)
    assert rec["box_study"]["S\\B"] == pytest.approx(want_out, rel=1e-5)
    assert rec["box_study"]["B"] == pytest.approx(want_box, rel=1e-5)
    assert rec["produced_by"]["metrics"]["box_study"] is True


def test_box_study_without_boxes_names_the_problem(bundle_dir, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "a.png")
    args = ["evaluate", str(folder), "--bundle", bundle_dir, "--methods", "grad-cam", "--box-study",
            "--records", str(tmp_path / "r.jsonl"), "--backend", "ort-cpu"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, InputError)
    assert "--box-study needs ground-truth boxes" in str(result.exception)
