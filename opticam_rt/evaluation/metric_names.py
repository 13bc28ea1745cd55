"""The evaluation metrics by name: option name, record field / report column, and group, in one table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """``name`` is what ``--metrics`` takes; ``column`` the per-image record field and the
    report column; ``group`` decides what computes it (classification scores, perturbation
    curves, or the map against ground-truth boxes)."""

    name: str
    column: str
    group: str


METRICS: tuple[Metric, ...] = (
    Metric("ad", "AD", "classification"),
    Metric("ag", "AG", "classification"),
    Metric("ai", "AI", "classification"),
    Metric("insertion", "insertion", "curve"),
    Metric("deletion", "deletion", "curve"),
    Metric("om", "OM", "localisation"),
    Metric("le", "LE", "localisation"),
    Metric("f1", "F1", "localisation"),
    Metric("boxacc", "BoxAcc", "localisation"),
    Metric("maxboxacc", "MaxBoxAcc", "localisation"),
    Metric("sp", "SP", "localisation"),
    Metric("ep", "EP", "localisation"),
    Metric("sm", "SM", "localisation"),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
BY_COLUMN: dict[str, Metric] = {m.column: m for m in METRICS}


def names(group: str | None = None) -> tuple[str, ...]:
    """Metric names, all or of one group, in table order."""
    return tuple(m.name for m in METRICS if group is None or m.group == group)
