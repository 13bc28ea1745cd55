"""Run saliency methods over a dataset and record per-image metrics (resumable)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from opticam_rt.errors import InputError, OpticamError
from opticam_rt.evaluation.classification import classification_metrics_per_image
from opticam_rt.evaluation.datasets import Sample
from opticam_rt.evaluation.insertion_deletion import deletion, insertion
from opticam_rt.evaluation.localisation import DEFAULT_BOX_THRESHOLDS, localisation_metrics, saliency_metric
from opticam_rt.evaluation.metric_names import BY_COLUMN, BY_NAME, names
from opticam_rt.evaluation.records import RecordStore, produced_by
from opticam_rt.images import load_image

CLASSIFICATION = names("classification")
CURVES = names("curve")
LOCALISATION = names("localisation")
ALL_METRICS = names()
DEFAULT_METRICS = (*CLASSIFICATION, *CURVES)
#: Localisation protocols: the standard one, or the Opti-CAM paper's appendix variants.
PROTOCOLS = ("standard", "opticam")


def parse_metrics(text: str | Sequence[str] | None, have_boxes: bool) -> tuple[str, ...]:
    """'ad,ai,...' -> validated names; default AD/AI/AG + insertion/deletion (+ localisation with boxes)."""
    if text is None:
        return DEFAULT_METRICS + (LOCALISATION if have_boxes else ())
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(ALL_METRICS)}")
    if not have_boxes and any(m in LOCALISATION for m in names):
        raise InputError("localisation metrics need ground-truth boxes: give a CSV with x0,y0,x1,y1 columns (--boxes)")
    return tuple(names)


@dataclass
class EvaluationSettings:
    steps: int = 224
    batch_size: int = 8
    predict_batch_size: int = 32
    method_options: dict[str, dict[str, Any]] | None = None
    #: "standard" (pointing game with 15 px tolerance, ILSVRC OM/LE at IoU 0.5) or "opticam"
    #: (the Opti-CAM paper's Table A.7 variants); see ``localisation_metrics``.
    protocol: str = "standard"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InputError(f"localisation protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")


def evaluate_dataset(
    explainer: "opticam_rt.runtime.Explainer",  # noqa: F821
    samples: Sequence[Sample],
    methods: Sequence[str],
    metrics: Sequence[str],
    store: RecordStore,
    settings: EvaluationSettings | None = None,
    on_error: Callable[[str, str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Explain every sample with every method and append one record per (method, image) to ``store``.

    Boxes (x0, y0, x1, y1) are in the original image's pixels and are scaled to the model's
    input size with the image.

    Records already in the store that this run would produce too (same bundle, method, method
    options, metric settings, backend and opticam-rt version: ``record["produced_by"]``) are
    reused, so an interrupted run resumes; records made otherwise are never reused. Unreadable
    images are reported through ``on_error(image, message)`` and skipped. Returns the records of
    this run's settings (reused and new).
    """
    settings = settings or EvaluationSettings()
    size = explainer.input_size
    keys = {m: run_key(explainer, m, metrics, settings) for m in methods}
    done = {(m, str(r["image"])) for m in methods for r in store.matching(keys[m]) if "image" in r}
    loaded: dict[str, tuple[Sample, np.ndarray]] = {}
    scales: dict[str, tuple[float, float]] = {}
    for sample in samples:
        if all((m, str(sample.path)) in done for m in methods):
            continue
        try:
            image = load_image(sample.path, size)
            loaded[str(sample.path)] = (sample, image.pixels)
            h0, w0 = image.original_size
            scales[str(sample.path)] = (size[1] / w0, size[0] / h0)
        except OpticamError as exc:
            if on_error:
                on_error(str(sample.path), str(exc))
    for method in methods:
        todo = [key for key in loaded if (method, key) not in done]
        options = (settings.method_options or {}).get(method, {})
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start : start + settings.batch_size]
            images = np.stack([loaded[k][1] for k in batch])
            labels = [loaded[k][0].label for k in batch]
            try:
                targets = None if all(lb is None for lb in labels) else [
                    lb if lb is not None else int(explainer.predict(images[i : i + 1])[0].argmax()) for i, lb in enumerate(labels)
                ]
                result = explainer.explain(images, method=method, targets=targets, **options)
            except OpticamError as exc:
                for k in batch:
                    if on_error:
                        on_error(k, str(exc))
                continue
            for record in _records(explainer, method, batch, loaded, scales, images, result, metrics, settings):
                store.append({**record, "produced_by": keys[method]})
            if progress:
                progress(len(batch))
    return [r for m in methods for r in store.matching(keys[m])]


def run_key(explainer: Any, method: str, metrics: Sequence[str], settings: EvaluationSettings) -> dict[str, Any]:
    """``produced_by`` of the records ``method`` gives in this run (see opticam_rt.evaluation.records).

    The options are keyed with their defaults filled in (``--iterations 100`` and no flag make
    the same records), and the backend is the one that computes ``method`` (``auto`` resolves
    per method).
    """
    from opticam_rt.runtime.explainer import method_class

    given = (settings.method_options or {}).get(method, {})
    options = method_class(method).Options.parse(given, method).as_dict()
    metric_settings = {"names": sorted(metrics), "steps": settings.steps, "protocol": settings.protocol}
    return produced_by(explainer.bundle.sha256, method, options, metric_settings, explainer.runner_for(method).name)


def _records(
    explainer: Any,
    method: str,
    keys: list[str],
    loaded: dict[str, tuple[Sample, np.ndarray]],
    scales: dict[str, tuple[float, float]],
    images: np.ndarray,
    result: Any,
    metrics: Sequence[str],
    settings: EvaluationSettings,
) -> list[dict[str, Any]]:
    predict = explainer.predict_proba
    per_image = classification_metrics_per_image(result.scores, result.masked_scores)
    curves: dict[str, Any] = {}
    for mode, fn in (("insertion", insertion), ("deletion", deletion)):
        if mode in metrics:
            curves[mode] = fn(
                images, result.maps, result.targets, predict, steps=settings.steps, batch_size=settings.predict_batch_size
            )
    sm = None
    if "sm" in metrics:
        sm = saliency_metric(images, result.maps, result.targets, predict, batch_size=settings.predict_batch_size)
    top1 = predict(images).argmax(axis=1)
    records = []
    for i, key in enumerate(keys):
        sample = loaded[key][0]
        record: dict[str, Any] = {
            "method": method,
            "image": key,
            "target": int(result.targets[i]),
            "p": float(result.scores[i]),
            "o": float(result.masked_scores[i]),
        }
        for name in CLASSIFICATION:
            if name in metrics:
                column = BY_NAME[name].column
                record[column] = float(per_image[column][i])
        for mode, curve in curves.items():
            record[mode] = float(curve.aucs[i])
            record[f"{mode}_curve"] = [float(v) for v in curve.curves[i]]
        if sample.boxes and any(m in metrics for m in LOCALISATION):
            # Boxes are given in the original image's pixels; the maps are at model resolution.
            sx, sy = scales[key]
            boxes = [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in sample.boxes]
            loc = localisation_metrics(
                result.maps[i], boxes, correct_class=bool(top1[i] == result.targets[i]), protocol=settings.protocol,
                box_thresholds=DEFAULT_BOX_THRESHOLDS if "maxboxacc" in metrics else None,
            )
            for field, value in loc.items():
                # box_acc_grid: per-image hits over thresholds, which the report reduces to MaxBoxAcc.
                if field in ("max_iou", "box_acc_grid") or (field in BY_COLUMN and BY_COLUMN[field].name in metrics):
                    record[field] = value
            if sm is not None:
                record[BY_NAME["sm"].column] = float(sm[i])
        records.append(record)
    return records
