"""The evaluation metrics by name: option name, record field / report column, and group, in one table."""

from __future__ import annotations

from dataclasses import dataclass

#: Localisation protocols: the standard one, or the Opti-CAM paper's appendix variants
#: (evaluation.localisation.protocols; the CLI's --protocol choices).
PROTOCOLS = ("standard", "opticam")


@dataclass(frozen=True)
class Metric:
    """``name`` is what ``--metrics`` takes; ``column`` the per-image record field and the
    report column; ``group`` decides what computes it (classification scores, perturbation
    curves, or the map against ground-truth boxes)."""

    name: str
    column: str
    group: str
    #: What the column means, its unit, and which way is better ("lower" / "higher").
    meaning: str = ""
    unit: str = "%"
    better: str = "higher"


METRICS: tuple[Metric, ...] = (
    Metric("ad", "AD", "classification", "average drop of the class probability on the masked image", "%", "lower"),
    Metric("ag", "AG", "classification", "average gain of the class probability on the masked image"),
    Metric("ai", "AI", "classification", "images whose class probability increases when masked"),
    Metric("insertion", "insertion", "curve", "area under the insertion curve", "AUC in [0, 1]"),
    Metric("deletion", "deletion", "curve", "area under the deletion curve", "AUC in [0, 1]", "lower"),
    Metric("om", "OM", "localisation", "official ILSVRC metric: wrong class or box missed", "%", "lower"),
    Metric("le", "LE", "localisation", "localisation error: box missed", "%", "lower"),
    Metric("f1", "F1", "localisation", "pixel F1 of the map against the boxes"),
    Metric("boxacc", "BoxAcc", "localisation", "predicted box hits a ground-truth box (IoU >= 0.5)"),
    Metric("maxboxacc", "MaxBoxAcc", "localisation", "box accuracy at the best threshold, mean over IoU 0.3/0.5/0.7"),
    Metric("sp", "SP", "localisation", "pointing game: the map's peak falls in a box"),
    Metric("ep", "EP", "localisation", "energy pointing game: share of the map inside the boxes"),
    Metric("sm", "SM", "localisation", "saliency metric: log crop area - log class probability on the crop", "log units", "lower"),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
BY_COLUMN: dict[str, Metric] = {m.column: m for m in METRICS}


def names(group: str | None = None) -> tuple[str, ...]:
    """Metric names, all or of one group, in table order."""
    return tuple(m.name for m in METRICS if group is None or m.group == group)
