"""matplotlib for the reports' figures: checked before any work, drawn without pyplot.

Figure + the Agg canvas directly: no pyplot, so no global backend switch and no window; the same
output as ``matplotlib.use("Agg")``.
"""

from __future__ import annotations

from typing import Any

from opticam_rt.errors import InputError

INSTALL_HINT = "pip install 'opticam-rt[all]'"


def require_matplotlib(what: str = "plotting") -> None:
    """Raise InputError naming ``what`` (e.g. '--plot') when matplotlib is not installed; call it
    before the work whose result would be plotted."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise InputError(f"{what} needs matplotlib, which is not installed: {INSTALL_HINT}") from exc


def figure(width: float, height: float, rows: int = 1, columns: int = 1) -> tuple[Any, Any]:
    """(Figure, axes array (rows, columns)) of width x height inches, constrained layout."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, columns, squeeze=False)
