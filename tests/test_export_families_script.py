"""scripts/export_families.py: a timm family without timm fails with what to install.

timm is a measurement-only extra (docs/models.md, "timm families"); CI does not install it, so
this checks only the guarded import and the table mode, which need no timm.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "export_families.py"


def _timm_importable() -> bool:
    if importlib.util.find_spec("timm") is None:
        return False
    try:
        import timm  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True


@pytest.mark.skipif(_timm_importable(), reason="timm imports here: the script would export the model")
def test_a_timm_family_without_timm_names_the_extra(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "timm:resnet50", "--one", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "timm:resnet50: timm is not importable here" in last and "opticam-rt[timm]" in last, done.stderr


def test_table_marks_a_graph_settled_by_its_float64_run(tmp_path, capsys):
    row = {
        "family": "timm:x", "seed": 3, "parameters": 2.5e6, "tap": "blocks@0", "tap_shape": [576, 7, 7],
        "export_s": 1.0, "verify_s": 2.0, "peak_rss_gb": 1.0, "bundle_mb": 3.0, "verified": True,
        "norm_errors": {"forward": 1e-6, "opticam_step": 1.9e-3}, "limits": {"forward": 1e-3, "opticam_step": 1e-3},
        "float64_graph_norm_errors": {"opticam_step": 1.6e-5}, "gradcam_r": 0.99999, "gradcam_max_diff": 1e-5,
        "gradcam_s": 0.1, "opticam_s": 0.2, "opticam_iterations": 20, "load_before": 1.0, "load_after": 1.1,
    }  # fmt: skip
    (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n" + json.dumps({"family": "timm:y", "error": "boom"}) + "\n")
    done = subprocess.run([sys.executable, str(SCRIPT), "--table", str(tmp_path / "rows.jsonl")],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| timm:")]
    assert "1.9e-03 opticam_step, limit 1.0e-03; the graph in float64 1.6e-05" in rows[0]
    assert "(seed 3)" in rows[0] and "**error**: boom" in rows[1]
