"""`evaluate` reaches every metric in the table: MaxBoxAcc (per-image BoxAcc grids reduced by the
report) and the Opti-CAM paper's localisation protocol, both selectable from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from opticam_rt.cli import cli
from opticam_rt.evaluation.metric_names import METRICS
from opticam_rt.evaluation.records import RecordStore
from opticam_rt.evaluation.report import METRIC_ORDER
from opticam_rt.evaluation.runner import ALL_METRICS


def run(bundle_dir: str, csv: Path, records: Path, protocol: str) -> dict:
    args = ["evaluate", str(csv), "--bundle", bundle_dir, "--methods", "grad-cam", "--metrics", "sp,f1,le,maxboxacc",
            "--protocol", protocol, "--records", str(records), "--format", "json", "--backend", "ort-cpu"]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


def test_one_table_names_every_metric():
    assert ALL_METRICS == tuple(m.name for m in METRICS)
    assert METRIC_ORDER[1:] == tuple(m.column for m in METRICS)
    assert len({m.column for m in METRICS}) == len(METRICS)


def test_maxboxacc_and_protocol_reach_the_report(bundle_dir, boxed_csv, tmp_path):
    standard = run(bundle_dir, boxed_csv, tmp_path / "std.jsonl", "standard")["grad-cam"]
    paper = run(bundle_dir, boxed_csv, tmp_path / "paper.jsonl", "opticam")["grad-cam"]
    for report in (standard, paper):
        assert report["n_images"] == 3
        assert 0 <= report["MaxBoxAcc"] <= 100 and {"SP", "F1", "LE"} <= set(report)
    records = RecordStore(tmp_path / "paper.jsonl").records()
    assert all(r["produced_by"]["metrics"]["protocol"] == "opticam" for r in records)
    assert all(np.asarray(r["box_acc_grid"]).shape == (100, 3) for r in records)
    # the paper's F1 is soft (no threshold) and its LE continuous: the numbers must move
    assert (standard["F1"], standard["LE"]) != (paper["F1"], paper["LE"])


def test_the_start_message_has_its_own_line_before_the_bar(bundle_dir, boxed_csv, tmp_path):
    """The bar used to be drawn first, so the message continued its line ('evaluate:   0%|3 images x')."""
    args = ["evaluate", str(boxed_csv), "--bundle", bundle_dir, "--methods", "grad-cam,fake-cam", "--metrics", "sp",
            "--records", str(tmp_path / "r.jsonl"), "--backend", "ort-cpu"]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("3 images x 2 methods (grad-cam on ort-cpu, fake-cam on ort-cpu)"), result.stderr[:200]
    assert "evaluate:" in result.stderr  # 6 units: the bar is on, after the message


def test_html_report_has_the_table_and_the_overlays(bundle_dir, boxed_csv, tmp_path):
    pytest.importorskip("matplotlib")
    import base64
    import html.parser
    import io

    out = tmp_path / "report.html"
    args = ["evaluate", str(boxed_csv), "--bundle", bundle_dir, "--methods", "grad-cam,fake-cam", "--metrics", "ad,sp",
            "--records", str(tmp_path / "r.jsonl"), "--backend", "ort-cpu", "--html", str(out), "--format", "json"]  # fmt: skip
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])

    class Collect(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.cells, self.images, self.title = [], [], None
            self._in = None

        def handle_starttag(self, tag, attrs):
            self._in = tag
            if tag == "img":
                self.images.append(dict(attrs)["src"])

        def handle_data(self, data):
            if self._in in ("td", "th") and data.strip():
                self.cells.append(data.strip())
            if self._in == "title":
                self.title = data

    page = Collect()
    page.feed(out.read_text())
    assert page.title == f"opticam-rt evaluate: {boxed_csv}"
    assert page.cells[:4] == ["method", "n_images", "AD", "SP"]
    row = page.cells[page.cells.index("grad-cam") : page.cells.index("grad-cam") + 4]
    assert row == ["grad-cam", "3", f"{summary['grad-cam']['AD']:.2f}", f"{summary['grad-cam']['SP']:.2f}"]
    assert len(page.images) == 1  # the overlays (no curve metrics asked for)
    png = base64.b64decode(page.images[0].split(",", 1)[1])
    with Image.open(io.BytesIO(png)) as figure:
        assert figure.size == (round(3 * 2.6 * 100), round((3 * 2.6 + 0.5) * 100))  # 3 images x (photo | 2 methods)
    # refused before any work when it exists (no --overwrite)
    again = CliRunner().invoke(cli, args)
    assert again.exit_code != 0 and "report.html: exists" in str(again.exception)
