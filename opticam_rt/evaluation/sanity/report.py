"""Sanity-check reports: the wall and randomisation summaries as a table, JSON or CSV, and their plots."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping

from opticam_rt.errors import InputError
from opticam_rt.plotting import figure

__all__ = ["WALL_COLUMNS", "format_randomisation", "format_wall", "plot_randomisation", "plot_wall"]

#: Columns of the wall report, in order.
WALL_COLUMNS = ("n_images", "hidden_mass", "hidden_peak", "hidden_l2", "hidden_area")


def format_wall(summary: Mapping[str, Mapping[str, float | None]], fmt: str) -> str:
    """{method: {n_images, hidden_mass, hidden_peak, hidden_l2, hidden_area}} as ``table``, ``json`` or ``csv``."""
    from opticam_rt.evaluation.report import format_report

    return format_report(dict(summary), fmt, WALL_COLUMNS)  # type: ignore[arg-type]


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_randomisation(summary: Mapping[str, Any], fmt: str) -> str:
    """{method: {n_images, steps: [{step, randomised, spearman, ssim}]}} as ``table``, ``json`` or ``csv``.

    JSON is the summary itself; CSV has one row per (method, step); the table has one row per
    method, Spearman then SSIM per step, with the steps' layers listed under it.
    """
    if fmt == "json":
        return json.dumps(summary, indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["method", "step", "randomised", "n_images", "spearman", "ssim"])
        for method, entry in summary.items():
            for s in entry["steps"]:
                writer.writerow([method, s["step"], s["randomised"], entry["n_images"],
                                 "" if s["spearman"] is None else repr(s["spearman"]),
                                 "" if s["ssim"] is None else repr(s["ssim"])])
        return buf.getvalue()
    if fmt != "table":
        raise InputError(f"report format must be 'table', 'json' or 'csv', got {fmt!r}")
    if not summary:
        return "(no results)\n"
    steps = next(iter(summary.values()))["steps"]
    header = ["method", "n", *(f"rho@{s['step']}" for s in steps), *(f"ssim@{s['step']}" for s in steps)]
    rows = [[m, str(e["n_images"]), *(_cell(s["spearman"]) for s in e["steps"]), *(_cell(s["ssim"]) for s in e["steps"])]
            for m, e in summary.items()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    legend = [f"step {s['step']}: + {s['randomised']} re-initialised" for s in steps]
    return "\n".join([*lines, "", "rho = Spearman rank correlation with the original map, ssim = SSIM; cumulative steps:",
                      *legend]) + "\n"


def _figure(width: float, height: float, columns: int) -> tuple[Any, Any]:
    fig, axes = figure(width, height, 1, columns)
    return fig, axes[0]


def _save(fig: Any, path: str | Path, overwrite: bool) -> Path:
    """The figure to ``path`` atomically, in the format its suffix names; an existing file is
    replaced only with ``overwrite`` (OutputError otherwise)."""
    from opticam_rt.outputs import write_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = out.suffix.lstrip(".").lower() or "png"
    return write_file(out, lambda f: fig.savefig(f, format=fmt), overwrite)


def plot_wall(summary: Mapping[str, Mapping[str, float | None]], path: str | Path, title: str | None = None,
              overwrite: bool = False) -> Path:
    """Bars of each method's hidden_mass and hidden_peak, with the hidden area as a dashed line."""
    methods = list(summary)
    fig, axes = _figure(10.0, 0.45 * len(methods) + 1.8, 2)
    fig.suptitle(title or "Wall test: saliency a method puts where the walled model cannot see (lower is better)")
    area = next((e["hidden_area"] for e in summary.values() if e.get("hidden_area") is not None), None)
    for ax, column, title in zip(axes, ("hidden_mass", "hidden_peak"),
                                 ("share of saliency in the hidden region", "share of maps peaking there")):
        values = [summary[m].get(column) or 0.0 for m in methods]
        ax.barh(range(len(methods)), values, color="tab:red")
        ax.set_yticks(range(len(methods)), methods)
        ax.invert_yaxis()
        ax.set_xlim(0.0, 1.0)
        if area is not None:
            ax.axvline(area, color="k", linestyle="--", label=f"hidden area ({area:.2f})")
            ax.legend(fontsize="small")
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, path, overwrite)


def plot_randomisation(summary: Mapping[str, Any], path: str | Path, title: str | None = None,
                       overwrite: bool = False) -> Path:
    """Spearman and SSIM against cascade step (step 0: the original model, similarity 1) per method."""
    fig, axes = _figure(11.0, 4.3, 2)
    fig.suptitle(title or "Model randomisation: similarity to the original maps as layers are re-initialised (lower is better)")
    for ax, column, title in zip(axes, ("spearman", "ssim"), ("Spearman rank correlation", "SSIM")):
        for method, entry in summary.items():
            xs = [0] + [s["step"] for s in entry["steps"]]
            ys = [1.0] + [float("nan") if s[column] is None else s[column] for s in entry["steps"]]
            ax.plot(xs, ys, marker="o", label=method)
        steps = next(iter(summary.values()))["steps"] if summary else []
        ax.set_xticks([0] + [s["step"] for s in steps], ["original"] + [f"+{s['randomised']}" for s in steps],
                      rotation=30, ha="right", fontsize="small")
        ax.set_title(f"{title} with the original map")
        ax.set_ylim(-1.0 if column == "spearman" else 0.0, 1.05)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize="small")
    return _save(fig, path, overwrite)
