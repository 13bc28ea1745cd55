"""Tests of aggregating records and of the table / JSON / CSV outputs and the curve plot."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from opticam_rt.errors import InputError
from opticam_rt.evaluation.report import aggregate, format_csv, format_json, format_report, format_table, plot_curves

RECORDS = [
    {"method": "opticam", "image": "a", "AD": 10.0, "AI": 100.0, "SP": None, "note": "x"},
    {"method": "opticam", "image": "b", "AD": 20.0, "AI": 0.0, "SP": 100.0},
    {"method": "gradcam", "image": "a", "AD": 40.0, "AI": 0.0, "SP": 0.0},
    {"method": "gradcam", "image": "b", "AD": 99.0, "AI": 0.0, "SP": 0.0},
    {"method": "gradcam", "image": "b", "AD": 50.0, "AI": 100.0, "SP": 100.0},  # redone: last wins
]


def test_aggregate_means_per_method() -> None:
    summary = aggregate(RECORDS)
    assert summary == {
        "opticam": {"n_images": 2.0, "AD": 15.0, "AI": 50.0, "SP": 100.0},  # None skipped
        "gradcam": {"n_images": 2.0, "AD": 45.0, "AI": 50.0, "SP": 50.0},
    }


def test_aggregate_reduces_box_accuracy_grids() -> None:
    records = [
        {"method": "m", "image": "1", "box_acc_grid": [[1, 0], [1, 1], [0, 0]]},
        {"method": "m", "image": "2", "box_acc_grid": [[0, 0], [1, 0], [0, 1]]},
    ]
    assert aggregate(records)["m"]["MaxBoxAcc"] == pytest.approx(75.0)


def test_json_round_trip() -> None:
    summary = aggregate(RECORDS)
    assert json.loads(format_json(summary)) == summary
    assert json.loads(format_report(summary, "json", metrics=["AD", "EP"])) == {
        "opticam": {"AD": 15.0, "EP": None},
        "gradcam": {"AD": 45.0, "EP": None},
    }


def test_csv_round_trip() -> None:
    summary = aggregate(RECORDS)
    rows = list(csv.DictReader(io.StringIO(format_csv(summary))))
    assert [r["method"] for r in rows] == ["opticam", "gradcam"]
    assert list(rows[0]) == ["method", "n_images", "AD", "AI", "SP"]  # known metrics in order
    for row in rows:
        assert {k: float(v) for k, v in row.items() if k != "method"} == summary[row["method"]]


def test_table_is_aligned() -> None:
    summary = {"opticam": {"AD": 1.5, "AG": 68.75}, "a-much-longer-name": {"AD": 12.25}}
    text = format_table(summary, legend=False)
    lines = text.splitlines()
    assert lines[0].split() == ["method", "AD", "AG"]
    assert lines[2].split() == ["opticam", "1.50", "68.75"]
    assert lines[3].split() == ["a-much-longer-name", "12.25", "-"]
    assert len({len(line) for line in lines}) == 1  # every row as wide as the header
    # Right-aligned numbers: the AD column ends at the same character on every row.
    ends = {line.index(cell) + len(cell) for line, cell in zip(lines[2:], ["1.50", "12.25"])}
    assert len(ends) == 1
    with pytest.raises(InputError):
        format_report(summary, "xml")  # type: ignore[arg-type]


def test_plot_curves_writes_an_image(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    curves = {
        "opticam": {"insertion": np.linspace(0, 1, 9)[None].repeat(3, 0), "deletion": np.linspace(1, 0, 9)},
        "gradcam": {"deletion": np.full((2, 5), 0.5)},
    }
    out = plot_curves(curves, tmp_path / "plots" / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError):
        plot_curves({"m": {"deletion": np.zeros((2, 1))}}, tmp_path / "bad.png")


def test_plot_curves_without_matplotlib_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" fail
    with pytest.raises(InputError, match=r"plotting curves needs matplotlib.*pip install 'opticam-rt\[all\]'"):
        plot_curves({"m": {"deletion": np.zeros((1, 3))}}, tmp_path / "x.png")


def _capture_figures(monkeypatch: pytest.MonkeyPatch, module: object) -> list:
    """Record the figures a plotting function makes (its title is gone once it is a PNG)."""
    made: list = []
    real = module.figure  # type: ignore[attr-defined]

    def spy(*args, **kwargs):
        fig, axes = real(*args, **kwargs)
        made.append(fig)
        return fig, axes

    monkeypatch.setattr(module, "figure", spy)
    return made


def test_every_report_figure_carries_a_title(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    import opticam_rt.evaluation.report as report
    import opticam_rt.evaluation.sanity.report as sanity_report
    from opticam_rt.evaluation.sanity import plot_randomisation, plot_wall

    made = _capture_figures(monkeypatch, report)
    sanity_made = _capture_figures(monkeypatch, sanity_report)
    plot_curves({"opti-cam": {"insertion": np.zeros((3, 5)), "deletion": np.ones((3, 5))}}, tmp_path / "c.png")
    plot_curves({"grad-cam": {"deletion": np.ones((2, 5))}}, tmp_path / "d.png", title="effnet: 2 photos")
    plot_wall({"grad-cam": {"hidden_mass": 0.1, "hidden_peak": 0.0, "hidden_area": 0.25}}, tmp_path / "w.png")
    steps = [{"step": 1, "randomised": "fc", "spearman": 0.2, "ssim": 0.3}]
    plot_randomisation({"grad-cam": {"steps": steps}}, tmp_path / "r.png")
    titles = [f.get_suptitle() for f in made + sanity_made]
    assert titles[0] == "Insertion and deletion: mean curve per method over 3 image(s)"
    assert titles[1] == "effnet: 2 photos"
    assert titles[2].startswith("Wall test") and titles[3].startswith("Model randomisation")


def test_table_says_what_each_column_means_and_which_way_is_better() -> None:
    summary = {"opti-cam": {"n_images": 2.0, "AD": 1.5, "AG": 68.75, "deletion": 0.1, "SM": 0.3}}
    legend = format_table(summary).split("\n\n", 1)[1].splitlines()
    assert legend == [
        "AD        average drop of the class probability on the masked image, % (lower is better)",
        "AG        average gain of the class probability on the masked image, % (higher is better)",
        "deletion  area under the deletion curve, AUC in [0, 1] (lower is better)",
        "SM        saliency metric: log crop area - log class probability on the crop, log units (lower is better)",
    ]
