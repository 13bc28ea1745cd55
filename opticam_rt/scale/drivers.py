"""The driver side of ``evaluate --ray`` and ``explain --ray``: plan batches, stream results in, write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from opticam_rt.evaluation.datasets import Sample
from opticam_rt.evaluation.records import RecordStore
from opticam_rt.evaluation.runner import EvaluationSettings, done_keys, plan_batches, record_outcome, records_of
from opticam_rt.outputs import check_writable_folder
from opticam_rt.runtime.files import FileResult, plan_files, write_outputs
from opticam_rt.scale.config import RayConfig
from opticam_rt.scale.ray_executor import RayBatchExecutor, read_contents


def evaluate_dataset_on_ray(
    bundle_dir: str | Path,
    samples: Sequence[Sample],
    methods: Sequence[str],
    metrics: Sequence[str],
    store: RecordStore,
    settings: EvaluationSettings | None = None,
    config: RayConfig | None = None,
    on_error: Callable[[str, str], None] | None = None,
    progress: Callable[[int], None] | None = None,
    executor: RayBatchExecutor | None = None,
    *,
    run_keys: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """``evaluation.runner.evaluate_dataset`` with the batches spread over a Ray cluster.

    The same batches (records already in ``store`` skipped, so an interrupted run resumes), the
    same records, appended here by the driver as each batch comes back (so the file's line order
    may differ from a single-process run's; its content does not). ``run_keys``: method -> what
    produces its records in this run (``evaluation.runner.run_key``, computed by the driver, which
    has the bundle open), so records are reused only under the same settings. ``executor``: a
    pool already started (its owner tears it down); otherwise one is started from ``config``.
    """
    settings = settings or EvaluationSettings()
    batches = plan_batches(samples, methods, done_keys(store, run_keys), settings.batch_size)

    def call(i: int) -> tuple[str, tuple[Any, ...]]:
        batch = batches[i]
        return "evaluate", (batch, list(metrics), settings, read_contents([str(s.path) for s in batch.samples]))

    def done(i: int, outcome: Any) -> None:
        record_outcome(outcome, store, on_error, run_keys[batches[i].method])
        if progress:
            progress(len(batches[i].samples))

    if batches:
        _run(bundle_dir, config, executor, len(batches), call, done)
    return records_of(store, run_keys, samples)


def explain_files_on_ray(
    bundle_dir: str | Path,
    paths: Sequence[str | Path],
    method: str = "opti-cam",
    target: int | None = None,
    batch_size: int = 8,
    out_dir: str | Path | None = None,
    config: RayConfig | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    executor: RayBatchExecutor | None = None,
    overwrite: bool = False,
    **options: Any,
) -> list[FileResult]:
    """``runtime.files.explain_files`` with the batches spread over a Ray cluster.

    The same plan (``runtime.files.plan_files``: output names, existing outputs refused before
    any work unless ``overwrite``, batches); the driver writes each image's .npy map and .png
    overlay (encoded by the actor) atomically, and calls ``on_result`` per image as its batch
    comes back. The results are returned in input order, with ``overlay_png`` and no ``original``.

    Raises:
        OutputError: ``out_dir`` cannot be created or written (checked before any computing).
    """
    paths = [str(p) for p in paths]
    out = check_writable_folder(out_dir) if out_dir is not None else None
    plan = plan_files(paths, method, batch_size, out, overwrite)
    results: list[FileResult | None] = [None] * len(paths)
    for i, error in plan.refused.items():
        results[i] = FileResult(paths[i], error=error)
        if on_result:
            on_result(results[i])

    def call(k: int) -> tuple[str, tuple[Any, ...]]:
        chunk = [paths[i] for i in plan.batches[k]]
        return "explain", (chunk, method, target, options, read_contents(chunk))

    def done(k: int, batch: list[FileResult]) -> None:
        for i, result in zip(plan.batches[k], batch):
            write_outputs(result, method, plan.stems[i], out, overwrite)
            results[i] = result
            if on_result:
                on_result(result)

    if plan.batches:
        _run(bundle_dir, config, executor, len(plan.batches), call, done)
    return [r for r in results if r is not None]


def _run(
    bundle_dir: str | Path,
    config: RayConfig | None,
    executor: RayBatchExecutor | None,
    count: int,
    call: Callable[[int], tuple[str, tuple[Any, ...]]],
    done: Callable[[int, Any], None],
) -> None:
    if executor is not None:
        executor.run(count, call, done)
        return
    with RayBatchExecutor(bundle_dir, config) as pool:
        pool.run(count, call, done)
