"""The driver side of ``evaluate --ray`` and ``explain --ray``: plan batches, stream results in, write them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from opticam_rt.evaluation.datasets import Sample
from opticam_rt.evaluation.records import RecordStore
from opticam_rt.evaluation.runner import EvaluationSettings, plan_batches, record_outcome
from opticam_rt.runtime.files import FileResult, output_stems, write_outputs
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
) -> list[dict[str, Any]]:
    """``evaluation.runner.evaluate_dataset`` with the batches spread over a Ray cluster.

    The same batches (records already in ``store`` skipped, so an interrupted run resumes), the
    same records, appended here by the driver as each batch comes back (so the file's line order
    may differ from a single-process run's; its content does not). ``executor``: a pool already
    started (its owner tears it down); otherwise one is started from ``config`` for this run.
    """
    settings = settings or EvaluationSettings()
    batches = plan_batches(samples, methods, store.done_keys(), settings.batch_size)

    def call(i: int) -> tuple[str, tuple[Any, ...]]:
        batch = batches[i]
        return "evaluate", (batch, list(metrics), settings, read_contents([str(s.path) for s in batch.samples]))

    def done(i: int, outcome: Any) -> None:
        record_outcome(outcome, store, on_error)
        if progress:
            progress(len(batches[i].samples))

    if batches:
        _run(bundle_dir, config, executor, len(batches), call, done)
    return store.records()


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
    **options: Any,
) -> list[FileResult]:
    """``runtime.files.explain_files`` with the batches spread over a Ray cluster.

    The driver writes each image's .npy map and .png overlay (encoded by the actor) under the
    name a single-process run gives it, and calls ``on_result`` per image as its batch comes
    back. The results are returned in input order, with ``overlay_png`` and no ``original``.
    """
    paths = [str(p) for p in paths]
    stems = output_stems(paths)
    starts = list(range(0, len(paths), batch_size))
    results: list[list[FileResult]] = [[] for _ in starts]

    def call(i: int) -> tuple[str, tuple[Any, ...]]:
        chunk = paths[starts[i] : starts[i] + batch_size]
        return "explain", (chunk, method, target, options, read_contents(chunk))

    def done(i: int, batch: list[FileResult]) -> None:
        for j, result in enumerate(batch):
            write_outputs(result, method, stems[starts[i] + j], out_dir)
            if on_result:
                on_result(result)
        results[i] = batch

    if starts:
        _run(bundle_dir, config, executor, len(starts), call, done)
    return [r for batch in results for r in batch]


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
