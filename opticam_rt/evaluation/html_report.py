"""A self-contained HTML report: the metrics table with its legend, and figures embedded as PNG
(the overlays of a few images side by side, the curves), in one file a reviewer can open or attach.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any, Callable, Mapping, Sequence

from opticam_rt.evaluation.metric_names import BY_COLUMN

#: Images shown side by side in an evaluate report: enough to see each method's habits, few
#: enough that re-explaining them (Opti-CAM: about a second each) stays short.
REPORT_IMAGES = 4

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.legend { color: #555; font-size: 0.9em; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
"""


def figure_png(draw: Callable[[Any], None]) -> bytes:
    """PNG bytes of ``draw(file)`` (a function writing a PNG into a binary file object)."""
    buffer = io.BytesIO()
    draw(buffer)
    return buffer.getvalue()


def render_html(
    title: str,
    summary: Mapping[str, Mapping[str, float]],
    columns: Sequence[str],
    figures: Sequence[tuple[str, bytes]] = (),
    notes: Sequence[str] = (),
) -> str:
    """The report as one HTML document. ``summary``: method -> column -> value (as ``aggregate``
    returns); ``figures``: (caption, PNG bytes), embedded as data URLs; ``notes``: paragraphs."""
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in ["method", *columns])
    body = []
    for method, row in summary.items():
        cells = "".join(f"<td>{_cell(row.get(c), c)}</td>" for c in columns)
        body.append(f"<tr><td>{esc(method)}</td>{cells}</tr>")
    legend = [
        f"<li><b>{esc(m.column)}</b>: {esc(m.meaning)}, {esc(m.unit)} ({esc(m.better)} is better)</li>"
        for m in (BY_COLUMN[c] for c in columns if c in BY_COLUMN)
    ]
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return _page(title, [table, f'<ul class="legend">{"".join(legend)}</ul>' if legend else ""], figures, notes)


def _cell(value: float | None, column: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if column == "n_images":
        return str(int(value))
    return f"{value:.2f}"


def render_text_html(title: str, text: str, figures: Sequence[tuple[str, bytes]] = (), notes: Sequence[str] = ()) -> str:
    """A report whose table is already text (the sanity checks'): shown preformatted, figures below."""
    return _page(title, [f"<pre>{html.escape(text)}</pre>"], figures, notes)


def _page(title: str, blocks: Sequence[str], figures: Sequence[tuple[str, bytes]], notes: Sequence[str]) -> str:
    """The HTML document: title, notes, the given blocks, then the figures as data-URL PNGs."""
    esc = html.escape
    shown = [
        f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
        for caption, png in figures
    ]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        *(f"<p>{esc(n)}</p>" for n in notes),
        *blocks,
        *shown,
        "</body></html>",
    ]) + "\n"
