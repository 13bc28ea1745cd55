"""The comparison figure a user reads first: photos in rows, the photo and each method's overlay in
titled columns, the explained class, the model's top classes and each map's scores on every row.

Every cell has the same size (a portrait photo sits centred in its cell instead of leaving a blank
strip at the end of a shorter row). Drawn with matplotlib when it is installed; without it, the
panels alone in a grid of equal cells (no text), and the caller is told so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: Inches per cell of the figure (square cells).
CELL_INCHES = 2.6


@dataclass
class ComparisonRow:
    """One photo of the figure.

    photo (H0, W0, 3) uint8; ``cells``: method -> (overlay (H1, W1, 3) uint8, p, masked p), where p
    is the explained class's softmax probability on the photo and masked p on photo x map;
    ``top``: the model's most probable classes as (name, probability), best first.
    """

    label: str
    photo: np.ndarray
    class_name: str
    cells: dict[str, tuple[np.ndarray, float, float]] = field(default_factory=dict)
    top: list[tuple[str, float]] = field(default_factory=list)


def column_titles(methods: Sequence[str]) -> list[str]:
    return ["photo", *methods]


def photo_caption(row: ComparisonRow) -> str:
    """Under the photo: the model's top classes, so a surprising top-1 explains itself."""
    if not row.top:
        return ""
    listed = [f"{name} {p:.2f}" for name, p in row.top]
    return "top: " + listed[0] + ("\n" + ", ".join(listed[1:]) if len(listed) > 1 else "")


def cell_caption(p: float, masked_p: float) -> str:
    return f"p {p:.3f} | masked p {masked_p:.3f}"


def draw_comparison(rows: Sequence[ComparisonRow], methods: Sequence[str]) -> Any:
    """The matplotlib Figure: len(rows) x (1 + len(methods)) equal cells; needs matplotlib."""
    from opticam_rt.plotting import figure

    if not rows:
        raise ValueError("draw_comparison needs at least one row")
    titles = column_titles(methods)
    fig, axes = figure(CELL_INCHES * len(titles), CELL_INCHES * len(rows) + 0.5, len(rows), len(titles))
    for r, row in enumerate(rows):
        pictures = [row.photo, *(row.cells[m][0] for m in methods)]
        captions = [photo_caption(row), *(cell_caption(*row.cells[m][1:]) for m in methods)]
        for c, (picture, caption) in enumerate(zip(pictures, captions)):
            ax = axes[r, c]
            ax.imshow(_square(picture))
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_xlabel(caption, fontsize="small", wrap=True)
            if r == 0:
                ax.set_title(titles[c], fontweight="bold")
        axes[r, 0].set_ylabel(f"{row.label}\nclass: {row.class_name}", fontsize="medium")
    return fig


def save_comparison(
    rows: Sequence[ComparisonRow], methods: Sequence[str], path: str | Path, overwrite: bool = True
) -> tuple[Path, bool]:
    """Write the figure as PNG, atomically; -> (path, titled). ``titled`` is False when matplotlib
    is missing and the untitled panel grid was written instead."""
    from opticam_rt.outputs import write_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write, titled = _png_writer(rows, methods)
    return write_file(out, write, overwrite), titled


def comparison_png(rows: Sequence[ComparisonRow], methods: Sequence[str]) -> tuple[bytes, bool]:
    """The figure as PNG bytes (for a report that embeds it); -> (png, titled)."""
    import io

    write, titled = _png_writer(rows, methods)
    buffer = io.BytesIO()
    write(buffer)
    return buffer.getvalue(), titled


def _png_writer(rows: Sequence[ComparisonRow], methods: Sequence[str]) -> tuple[Any, bool]:
    """(function writing the PNG into a binary file, titled)."""
    try:
        import matplotlib  # noqa: F401 - only whether it is installed
    except ImportError:
        from PIL import Image

        grid = _panel_grid([[_square(r.photo), *(_square(r.cells[m][0]) for m in methods)] for r in rows])
        return (lambda f: Image.fromarray(grid).save(f, format="PNG")), False
    fig = draw_comparison(rows, methods)
    return (lambda f: fig.savefig(f, format="png", dpi=100)), True


def _square(picture: np.ndarray, side: int = 256) -> np.ndarray:
    """(H, W, 3) uint8 fitted into a white side x side square, aspect kept, centred."""
    from PIL import Image

    h, w = picture.shape[:2]
    scale = side / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(picture).resize((nw, nh), Image.BILINEAR))
    canvas = np.full((side, side, 3), 255, dtype=np.uint8)
    top, left = (side - nh) // 2, (side - nw) // 2
    canvas[top : top + nh, left : left + nw] = resized
    return canvas


def _panel_grid(rows: list[list[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Equal square panels in rows and columns with white gaps."""
    side = rows[0][0].shape[0]
    columns = max(len(r) for r in rows)
    grid = np.full((len(rows) * (side + gap) - gap, columns * (side + gap) - gap, 3), 255, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, panel in enumerate(row):
            grid[i * (side + gap) : i * (side + gap) + side, j * (side + gap) : j * (side + gap) + side] = panel
    return grid
