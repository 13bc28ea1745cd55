"""Run saliency methods over a dataset and record per-image metrics (resumable)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from opticam_rt.errors import InputError, OpticamError
from opticam_rt.evaluation.box_study import box_study_scores
from opticam_rt.evaluation.classification import classification_metrics_per_image
from opticam_rt.evaluation.datasets import Sample
from opticam_rt.evaluation.insertion_deletion import deletion, insertion
from opticam_rt.evaluation.localisation import DEFAULT_BOX_THRESHOLDS, localisation_metrics, saliency_metric
from opticam_rt.evaluation.metric_names import BY_COLUMN, BY_NAME, names
from opticam_rt.evaluation.records import RecordStore, produced_by, to_jsonable
from opticam_rt.evaluation.metric_names import PROTOCOLS
from opticam_rt.images import load_image

CLASSIFICATION = names("classification")
CURVES = names("curve")
LOCALISATION = names("localisation")
ALL_METRICS = names()
DEFAULT_METRICS = (*CLASSIFICATION, *CURVES)


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
    #: Also score the box study (opticam_rt.evaluation.box_study): every image needs a box.
    box_study: bool = False

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InputError(f"localisation protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")


@dataclass
class EvaluationBatch:
    """One unit of evaluation work: up to ``batch_size`` samples explained together with ``method``."""

    method: str
    samples: list[Sample]


@dataclass
class BatchOutcome:
    """What one batch produced: a record per explained image, ``(image, message)`` per failed one."""

    records: list[dict[str, Any]]
    errors: list[tuple[str, str]]


def read_content(path: str | Path) -> bytes | None:
    """A regular file's bytes, or None (missing, a folder, a FIFO or device, unreadable): then
    ``load_image`` reports the path's own error, and nothing blocks on a FIFO or reads /dev/zero."""
    try:
        return Path(path).read_bytes() if Path(path).is_file() else None
    except OSError:
        return None


def fingerprint(samples: Sequence[Sample]) -> None:
    """Set each sample's ``sha256`` (its file's content) where not set yet."""
    for s in samples:
        if s.sha256 is None:
            content = read_content(s.path)
            s.sha256 = None if content is None else hashlib.sha256(content).hexdigest()


def sample_input(sample: Sample, sha256: str | None = None) -> dict[str, Any]:
    """What a record's numbers depend on besides the run's settings: the image's content, its
    label and its boxes (``record["input"]``). A record is reused only while all three are the same."""
    return to_jsonable({"sha256": sha256 or sample.sha256, "label": sample.label, "boxes": [list(b) for b in sample.boxes]})


def _identity(method: str, image: str, given: Any) -> tuple[str, str, str]:
    return method, image, json.dumps(given, sort_keys=True)


def plan_batches(
    samples: Sequence[Sample], methods: Sequence[str], done: set[tuple[str, str, str]], batch_size: int
) -> list[EvaluationBatch]:
    """The batches still to run, method by method in dataset order, skipping the samples whose
    ``(method, image, input)`` is ``done`` (see :func:`done_keys`; the input is the image's
    content hash, label and boxes, so an image replaced or relabelled is computed again). Every
    executor (this process, a Ray cluster) runs exactly these batches, so a batch's images are
    always explained together and the numbers match."""
    fingerprint(samples)
    batches = []
    for method in methods:
        todo = [s for s in samples if s.sha256 is None or _identity(method, str(s.path), sample_input(s)) not in done]
        batches += [EvaluationBatch(method, todo[i : i + batch_size]) for i in range(0, len(todo), batch_size)]
    return batches


def evaluate_batch(
    explainer: "opticam_rt.runtime.Explainer",  # noqa: F821
    batch: EvaluationBatch,
    metrics: Sequence[str],
    settings: EvaluationSettings,
    contents: Sequence[bytes | None] | None = None,
) -> BatchOutcome:
    """Load, explain and score one batch: the unit of work of every executor.

    ``contents`` optionally holds each sample's file content already read (None: read the path
    here), so a worker that cannot see the driver's files still can. Unreadable images and a
    batch the method rejects (InputError) become errors; the other images are still scored.
    """
    size = explainer.input_size
    errors: list[tuple[str, str]] = []
    loaded: dict[str, tuple[Sample, np.ndarray]] = {}
    scales: dict[str, tuple[float, float]] = {}
    hashes: dict[str, str] = {}
    for i, sample in enumerate(batch.samples):
        content = contents[i] if contents is not None else read_content(sample.path)
        try:
            image = load_image(sample.path, size, data=content)
        except OpticamError as exc:
            errors.append((str(sample.path), str(exc)))
            continue
        digest = hashlib.sha256(content).hexdigest() if content is not None else None
        if sample.sha256 is not None and digest != sample.sha256:
            errors.append((str(sample.path), f"{sample.path}: changed while the evaluation ran; run it again"))
            continue
        needs_boxes = settings.box_study or any(m in LOCALISATION for m in metrics)
        problem = box_problem(sample, image.original_size, size) if needs_boxes else None
        if problem is None and settings.box_study and not sample.boxes:
            problem = f"{sample.path}: the box study needs a ground-truth box for every image; this one has none (--boxes)"
        if problem is not None:
            errors.append((str(sample.path), problem))
            continue
        hashes[str(sample.path)] = digest  # type: ignore[assignment]
        loaded[str(sample.path)] = (sample, image.pixels)
        h0, w0 = image.original_size
        scales[str(sample.path)] = (size[1] / w0, size[0] / h0)
    keys = list(loaded)
    if not keys:
        return BatchOutcome([], errors)
    images = np.stack([loaded[k][1] for k in keys])
    labels = [loaded[k][0].label for k in keys]
    options = (settings.method_options or {}).get(batch.method, {})
    try:
        targets = None if all(lb is None for lb in labels) else [
            lb if lb is not None else int(explainer.predict(images[i : i + 1])[0].argmax()) for i, lb in enumerate(labels)
        ]
        result = explainer.explain(images, method=batch.method, targets=targets, **options)
    except OpticamError as exc:
        return BatchOutcome([], errors + [(k, str(exc)) for k in keys])
    records = _records(explainer, batch.method, keys, loaded, scales, images, result, metrics, settings)
    for record in records:
        record["input"] = sample_input(loaded[record["image"]][0], hashes[record["image"]])
    return BatchOutcome(records, errors)


def box_problem(sample: Sample, original_size: tuple[int, int], size: tuple[int, int]) -> str | None:
    """Why ``sample``'s boxes cannot be scored, naming the CSV line of the box, or None.

    A box must have been readable, must overlap the photo (``original_size``, (H0, W0)), and
    must still cover a pixel once scaled to the model's ``size`` (H, W) and rounded, as the
    localisation metrics round it.
    """
    if sample.box_problems:
        more = len(sample.box_problems) - 1
        return sample.box_problems[0] + (f" (and {more} more bad box{'es' if more > 1 else ''})" if more else "")
    h0, w0 = original_size
    h, w = size
    for i, (x0, y0, x1, y1) in enumerate(sample.boxes):
        where = sample.box_sources[i] if i < len(sample.box_sources) else str(sample.path)
        if min(x1, w0) <= max(x0, 0) or min(y1, h0) <= max(y0, 0):
            return f"{where}: box {(x0, y0, x1, y1)} lies outside the {w0} x {h0} photo {sample.path}"
        sx, sy = w / w0, h / h0
        a0, b0, a1, b1 = (int(round(v)) for v in (x0 * sx, y0 * sy, x1 * sx, y1 * sy))
        if min(a1, w) <= max(a0, 0) or min(b1, h) <= max(b0, 0):
            return (f"{where}: box {(x0, y0, x1, y1)} of the {w0} x {h0} photo {sample.path} covers no pixel "
                    f"at the model's {w} x {h} input; give a larger box")
    return None


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
    options, metric settings, backend and opticam-rt version: ``record["produced_by"]``; same
    image content, label and boxes: ``record["input"]``) are reused, so an interrupted run
    resumes; records made otherwise are never reused. Unreadable
    images are reported through ``on_error(image, message)`` (once per method) and skipped;
    ``progress(n)`` is called after each batch with its image count. Returns the records of this
    run's settings (reused and new). opticam_rt.scale runs the same batches
    (:func:`plan_batches`, :func:`evaluate_batch`, :func:`record_outcome`) on a Ray cluster.
    """
    settings = settings or EvaluationSettings()
    keys = {m: run_key(explainer, m, metrics, settings) for m in methods}
    for batch in plan_batches(samples, methods, done_keys(store, keys), settings.batch_size):
        outcome = evaluate_batch(explainer, batch, metrics, settings)
        record_outcome(outcome, store, on_error, keys[batch.method])
        if progress:
            progress(len(batch.samples))
    return records_of(store, keys, samples)


def done_keys(store: RecordStore, keys: dict[str, dict[str, Any]]) -> set[tuple[str, str, str]]:
    """``(method, image, input)`` of the records ``store`` holds under this run's ``keys``
    (method -> produced_by); ``input`` is the record's image content hash, label and boxes as
    canonical JSON. Records without an ``input`` (written before it existed) are never reused."""
    return {_identity(m, str(r["image"]), r["input"]) for m, key in keys.items() for r in store.matching(key)
            if "image" in r and isinstance(r.get("input"), dict)}


def records_of(store: RecordStore, keys: dict[str, dict[str, Any]], samples: Sequence[Sample]) -> list[dict[str, Any]]:
    """The records of this run's settings and of the samples as they are now (content, label,
    boxes), method by method; the last one when a (method, image) was recorded twice."""
    fingerprint(samples)
    current = {str(s.path): json.dumps(sample_input(s), sort_keys=True) for s in samples if s.sha256 is not None}
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for method, key in keys.items():
        for r in store.matching(key):
            image = str(r.get("image"))
            if image in current and json.dumps(r.get("input"), sort_keys=True) == current[image]:
                chosen[(method, image)] = r
    return list(chosen.values())


def record_outcome(
    outcome: BatchOutcome, store: RecordStore, on_error: Callable[[str, str], None] | None, key: dict[str, Any]
) -> None:
    """Append a batch's records to ``store``, each with what produced it (``key``), and report
    its errors: how every executor writes."""
    for record in outcome.records:
        store.append({**record, "produced_by": key})
    if on_error:
        for image, message in outcome.errors:
            on_error(image, message)


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
    if settings.box_study:  # only when on, so that the records of runs without it keep their key
        metric_settings["box_study"] = True
    return produced_by(explainer.bundle.sha256, method, options, metric_settings, explainer.runner_for(method).name)


def _scaled_boxes(sample: Sample, scale: tuple[float, float]) -> list[tuple[float, float, float, float]]:
    """The sample's boxes, given in the original image's pixels, at the model's resolution."""
    sx, sy = scale
    return [(x0 * sx, y0 * sy, x1 * sx, y1 * sy) for x0, y0, x1, y1 in sample.boxes]


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
    study = None
    if settings.box_study:
        study = box_study_scores(images, result.maps, [_scaled_boxes(loaded[k][0], scales[k]) for k in keys],
                                 result.targets, predict, settings.predict_batch_size)
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
        if study is not None:
            record["box_study"] = {k: float(v[i]) for k, v in study.items()}
        if sample.boxes and any(m in metrics for m in LOCALISATION):
            boxes = _scaled_boxes(sample, scales[key])
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
