"""``opticam-rt bench``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from opticam_rt.cli.model_option import model_option
from opticam_rt.cli.method_options import method_option_flags, options_for, pop_method_options

def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@click.command()
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(file_okay=False), help="Bundle directory.")
@click.option("--methods", default="floor-forward,floor-grad,grad-cam,opti-cam", show_default=True,
              help="Comma-separated methods; floor-forward / floor-grad time the bare network.")
@click.option("--backends", default="auto", show_default=True, help="Comma-separated backends (torch is added when its model can be rebuilt: see --model); 'auto' picks per method, as explain does.")
@click.option("--batch", "batches", default="1", show_default=True, help="Comma-separated batch sizes, e.g. 1,8.")
@click.option("--repeat", type=click.IntRange(min=1), default=3, show_default=True, help="Timed runs per case (median).")
@model_option
@method_option_flags()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--save-baseline", type=click.Path(dir_okay=False), default=None, help="Write the results as a baseline.")
@click.option("--baseline", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Fail (exit 1) when a ratio vs torch regressed by more than --threshold.")
@click.option("--threshold", type=float, default=0.15, show_default=True, help="Allowed ratio regression (0.15 = 15%).")
def bench(
    bundle_dir: str,
    methods: str,
    backends: str,
    batches: str,
    repeat: int,
    model_spec: str | None,
    fmt: str,
    save_baseline: str | None,
    baseline: str | None,
    threshold: float,
    **method_flags: object,
) -> None:
    """Latency of each method and backend against the PyTorch reference (medians, interleaved)."""
    import numpy as np

    from opticam_rt.bench import FLOORS, compare_to_baseline, format_rows, load_baseline, rows_to_json, run_benchmarks
    from opticam_rt.bundle import load_bundle
    from opticam_rt.errors import InputError
    from opticam_rt.images import sample_photos, to_model_input

    method_list = _list(methods)
    runnable = [m for m in method_list if m not in FLOORS]
    method_options = options_for(runnable, pop_method_options(method_flags)) if runnable else {}
    try:
        batch_list = [int(b) for b in _list(batches)]
    except ValueError as exc:
        raise InputError(f"--batch {batches!r} must be comma-separated integers") from exc
    bundle = load_bundle(bundle_dir)
    size = tuple(bundle.manifest.input_size)
    photos = sample_photos()
    if photos:
        images = np.stack([to_model_input(p, size) for p in photos.values()])  # type: ignore[arg-type]
    else:
        images = np.random.default_rng(0).random((4, 3, *size), dtype=np.float32)
    baseline_rows = load_baseline(baseline) if baseline else None
    rows = run_benchmarks(
        bundle_dir,
        method_list,
        _list(backends),
        batch_list,
        images,
        repeat=repeat,
        method_options=method_options,
        model=model_spec,
        log=lambda m: click.echo(m, err=True),
    )
    click.echo(rows_to_json(rows) if fmt == "json" else format_rows(rows))
    if save_baseline:
        Path(save_baseline).write_text(rows_to_json(rows))
        click.echo(f"baseline saved to {save_baseline}", err=True)
    if baseline_rows is not None:
        regressions = compare_to_baseline(rows, baseline_rows, threshold)
        for r in regressions:
            click.echo(
                f"REGRESSION {r.method} {r.backend} b{r.batch}: ratio vs torch {r.baseline_ratio:.2f} -> "
                f"{r.ratio:.2f} ({r.change:+.0%}, limit -{threshold:.0%})",
                err=True,
            )
        if regressions:
            sys.exit(1)
        click.echo(f"no ratio regressed by more than {threshold:.0%} against {baseline}", err=True)
