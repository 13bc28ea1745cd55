"""The figures of ``evaluate --html``: the first images' overlays per method, side by side, and the
mean insertion/deletion curves, embedded with the table in one HTML file."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from opticam_rt.comparison import ComparisonRow, comparison_png
from opticam_rt.evaluation.datasets import Sample
from opticam_rt.evaluation.html_report import REPORT_IMAGES, render_html
from opticam_rt.images import load_image
from opticam_rt.overlay import overlay


def overlay_rows(
    explainer: Any,
    samples: Sequence[Sample],
    methods: Sequence[str],
    method_options: Mapping[str, Mapping[str, Any]],
    limit: int = REPORT_IMAGES,
) -> list[ComparisonRow]:
    """The first ``limit`` samples explained by every method (their label, else the top-1 class).

    An image that fails to load here is left out of the figure (its error is in the run's report).
    """
    size = tuple(explainer.input_size)
    rows: list[ComparisonRow] = []
    for sample in samples:
        if len(rows) == limit:
            break
        try:
            loaded = load_image(sample.path, size)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - reported by the evaluation itself
            continue
        row = ComparisonRow(sample.path.name, loaded.original, "")
        batch = loaded.pixels[None]
        for method in methods:
            result = explainer.explain(batch, method=method, targets=sample.label, **method_options.get(method, {}))
            row.class_name = result.class_names[0] or str(int(result.targets[0]))
            row.cells[method] = (overlay(loaded.original, result.maps[0]),
                                 float(result.scores[0]), float(result.masked_scores[0]))
        proba = explainer.predict_proba(batch)[0]
        row.top = [(explainer.bundle.class_name(int(c)) or str(int(c)), float(proba[c])) for c in np.argsort(-proba)[:3]]
        rows.append(row)
    return rows


def write_evaluate_html(
    path: str | Path,
    summary: Mapping[str, Mapping[str, float]],
    columns: Sequence[str],
    rows: Sequence[ComparisonRow],
    methods: Sequence[str],
    curves: Mapping[str, Mapping[str, np.ndarray]],
    data: str,
    bundle: str,
    overwrite: bool,
) -> Path:
    """Render and write (atomically) the evaluate report."""
    from opticam_rt.evaluation.report import plot_curves
    from opticam_rt.outputs import write_file

    figures: list[tuple[str, bytes]] = []
    if rows:
        png, _ = comparison_png(rows, methods)
        figures.append((f"The first {len(rows)} image(s): photo and each method's map, with p and masked p", png))
    if any(curves.values()):
        with tempfile.TemporaryDirectory() as tmp:
            figures.append(("Mean insertion and deletion curves", plot_curves(curves, Path(tmp) / "c.png").read_bytes()))
    text = render_html(f"opticam-rt evaluate: {data}", summary, columns, figures,
                       notes=[f"bundle {bundle}; methods {', '.join(methods)}"])
    return write_file(Path(path), lambda f: f.write(text.encode()), overwrite)
