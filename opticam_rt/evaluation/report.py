"""Aggregate per-image records into per-method metrics and write them as a table, JSON or CSV, or plot curves.

:func:`aggregate` groups records by ``"method"`` and averages every numeric field over the
images that have it (a metric stored per image in its reported unit, e.g. AD in percent,
averages to the metric itself). ``None`` values are skipped (e.g. localisation metrics of an
image without boxes). Fields named in ``reducers`` are reduced by their own function
instead: by default ``box_acc_grid`` (per-image BoxAcc hits over thresholds) becomes
``MaxBoxAcc``. A method's images counted once each: if an image was recorded twice for a
method (e.g. a run redone), the last record wins.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from opticam_rt.plotting import figure, require_matplotlib
from opticam_rt.errors import InputError
from opticam_rt.evaluation.localisation import max_box_accuracy
from opticam_rt.evaluation.metric_names import BY_COLUMN, METRICS

__all__ = [
    "METRIC_ORDER",
    "aggregate",
    "format_csv",
    "format_json",
    "format_report",
    "format_table",
    "plot_curves",
]

Summary = dict[str, dict[str, float]]
Reducer = Callable[[list[Any]], dict[str, float]]

#: Column order of the outputs: metrics named here come first, in this order, others after
#: them in alphabetical order.
METRIC_ORDER: tuple[str, ...] = ("n_images", *(m.column for m in METRICS))

_KEY_FIELDS = frozenset({"method", "image"})


def _max_box_acc(grids: list[Any]) -> dict[str, float]:
    return {"MaxBoxAcc": max_box_accuracy(np.asarray(grids, dtype=np.float64))}


DEFAULT_REDUCERS: dict[str, Reducer] = {"box_acc_grid": _max_box_acc}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(float(value))


def aggregate(records: Iterable[Mapping[str, Any]], reducers: Mapping[str, Reducer] | None = None) -> Summary:
    """``{method: {metric: value}}`` from per-image records (see the module docstring).

    Each method also gets ``n_images``, the number of distinct images recorded for it.
    Non-numeric fields other than those in ``reducers`` (strings, lists) are ignored.
    """
    reducers = DEFAULT_REDUCERS if reducers is None else dict(reducers)
    by_method: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in records:
        if "method" not in r:
            raise InputError(f"a record has no 'method': {dict(r)!r}")
        # Keyed by image so that a redone image replaces its earlier record.
        by_method.setdefault(str(r["method"]), {})[str(r.get("image", id(r)))] = r
    summary: Summary = {}
    for method, per_image in by_method.items():
        values: dict[str, list[Any]] = {}
        for r in per_image.values():
            for key, value in r.items():
                if key in _KEY_FIELDS or value is None:
                    continue
                if key in reducers or _is_number(value):
                    values.setdefault(key, []).append(value)
        out: dict[str, float] = {"n_images": float(len(per_image))}
        for key, vals in values.items():
            if key in reducers:
                out.update(reducers[key](vals))
            else:
                out[key] = float(np.mean(np.asarray(vals, dtype=np.float64)))
        summary[method] = out
    return summary


def _columns(summary: Summary, metrics: Sequence[str] | None) -> list[str]:
    if metrics is not None:
        return list(metrics)
    present = {k for row in summary.values() for k in row}
    known = [m for m in METRIC_ORDER if m in present]
    return known + sorted(present - set(known))


def _cell(value: float | None, precision: int) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{precision}f}"


def format_table(summary: Summary, metrics: Sequence[str] | None = None, precision: int = 2, legend: bool = True) -> str:
    """Aligned plain-text table, one row per method, one column per metric ("-" where missing);
    with ``legend``, a line per column below it: what it means, its unit, which way is better."""
    cols = _columns(summary, metrics)
    header = ["method", *cols]
    rows = [[m, *(_cell(summary[m].get(c), precision) for c in cols)] for m in summary]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        # Method names left-aligned, numbers right-aligned so that decimals line up.
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "  ".join([first, *rest]).rstrip()

    sep = "  ".join("-" * w for w in widths)
    table = "\n".join([line(header), sep, *(line(r) for r in rows)]) + "\n"
    return table + (column_legend(cols) if legend else "")


def column_legend(columns: Sequence[str]) -> str:
    """"\n" + one line per known column: ``AD  average drop ..., % (lower is better)``."""
    known = [BY_COLUMN[c] for c in columns if c in BY_COLUMN]
    if not known:
        return ""
    width = max(len(m.column) for m in known)
    lines = [f"{m.column:<{width}}  {m.meaning}, {m.unit} ({m.better} is better)" for m in known]
    return "\n" + "\n".join(lines) + "\n"


def format_json(summary: Summary, metrics: Sequence[str] | None = None) -> str:
    """JSON object ``{method: {metric: value}}``; non-finite or missing values are null."""
    cols = _columns(summary, metrics)
    data = {
        m: {c: _count_or_value(c, v) if (v := row.get(c)) is not None and math.isfinite(v) else None for c in cols}
        for m, row in summary.items()
    }
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


def format_csv(summary: Summary, metrics: Sequence[str] | None = None) -> str:
    """CSV with header ``method,<metrics...>`` and one row per method; missing values empty."""
    cols = _columns(summary, metrics)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", *cols])
    for m, row in summary.items():
        writer.writerow([m, *("" if (v := row.get(c)) is None or not math.isfinite(v) else repr(_count_or_value(c, v))
                              for c in cols)])
    return buf.getvalue()


#: Columns that count things: written as integers (``n_images`` 2, not 2.0).
COUNT_COLUMNS = frozenset({"n_images"})


def _count_or_value(column: str, value: float) -> int | float:
    return int(value) if column in COUNT_COLUMNS and float(value).is_integer() else float(value)


def format_report(summary: Summary, fmt: Literal["table", "json", "csv"] = "table",
                  metrics: Sequence[str] | None = None) -> str:
    """The summary in ``fmt``: ``"table"``, ``"json"`` or ``"csv"``."""
    if fmt == "table":
        return format_table(summary, metrics)
    if fmt == "json":
        return format_json(summary, metrics)
    if fmt == "csv":
        return format_csv(summary, metrics)
    raise InputError(f"report format must be 'table', 'json' or 'csv', got {fmt!r}")


def _mean_curve(curves: Any, where: str) -> np.ndarray:
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim == 1:
        c = c[None]
    if c.ndim != 2 or c.shape[1] < 2 or c.shape[0] == 0:
        raise InputError(f"{where}: curves must be (N, steps + 1) with steps >= 1, got {c.shape}")
    return c.mean(axis=0)


def plot_curves(
    curves_by_method: Mapping[str, Mapping[str, np.ndarray]], path: str | Path, overwrite: bool = True,
    title: str | None = None,
) -> Path:
    """Draw the mean insertion and deletion curve of each method; save to ``path`` (format from its suffix).

    ``curves_by_method``: ``{method: {"insertion": (N, steps + 1), "deletion": (N, steps + 1)}}``
    (either kind may be missing; a 1-D array is taken as one curve). The x axis is the
    fraction of pixels inserted/deleted, in [0, 1]; the legend gives the AUC of the mean
    curve, which equals the mean of the per-image AUCs. Needs matplotlib. The file is written
    atomically; an existing one is replaced only when ``overwrite``. ``title`` heads the figure
    (default: what is plotted and over how many images).
    """
    kinds = [k for k in ("insertion", "deletion") if any(k in d for d in curves_by_method.values())]
    if not kinds:
        raise InputError("plot_curves needs 'insertion' or 'deletion' curves for at least one method")
    require_matplotlib("plotting curves")
    fig, axes = figure(5.0 * len(kinds), 4.0, 1, len(kinds))
    axes = axes[0]
    counts = sorted({np.atleast_2d(np.asarray(c[k])).shape[0] for c in curves_by_method.values() for k in kinds if k in c})
    images = "/".join(map(str, counts))
    fig.suptitle(title or f"{' and '.join(kinds).capitalize()}: mean curve per method over {images} image(s)")
    for ax, kind in zip(axes, kinds):
        for method, curves in curves_by_method.items():
            if kind not in curves:
                continue
            mean = _mean_curve(curves[kind], f"{method} {kind}")
            x = np.linspace(0.0, 1.0, mean.size)
            area = float(np.trapezoid(mean, dx=1.0 / (mean.size - 1)))
            ax.plot(x, mean, label=f"{method} (AUC {area:.3f})")
        ax.set_title(kind.capitalize())
        ax.set_xlabel(f"fraction of pixels {'inserted' if kind == 'insertion' else 'deleted'}")
        ax.set_ylabel("probability of the class")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(bottom=0.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    from opticam_rt.outputs import write_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_file(out, lambda f: fig.savefig(f, format=out.suffix.lstrip(".").lower() or "png"), overwrite)
