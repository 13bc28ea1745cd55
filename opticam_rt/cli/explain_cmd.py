"""``opticam-rt explain``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from opticam_rt.cli import EXIT_SOME_FAILED
from opticam_rt.cli.model_option import model_option
from opticam_rt.cli.method_options import method_option_flags, options_for, pop_method_options
from opticam_rt.cli.ray_options import ray_config, ray_option_flags
from opticam_rt.runtime.explainer import ENGINES, METHOD_NAMES
from opticam_rt.runtime.runners import BACKENDS


@click.command()
# Plain strings, not click.Path(exists=True): a missing, unreadable or folder path is one image's
# error (reported, the others explained), not a usage error that refuses the whole call.
@click.argument("images", nargs=-1, required=True)
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(file_okay=False), help="Bundle directory.")
@click.option("--method", type=click.Choice(METHOD_NAMES), default="opti-cam", show_default=True)
@click.option("--target", default="top1", show_default=True, help="'top1' or a class index.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--engine", type=click.Choice(ENGINES), default="host", show_default=True,
              help="host: the method's loop over the bundle graphs; graph: its self-contained explainer graph (ONNX Runtime).")
@model_option
@method_option_flags()
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--out", "out_dir", default="opticam-out", show_default=True, type=click.Path(file_okay=False), help="Where maps (.npy) and overlays (.png) go.")
@click.option("--overwrite", is_flag=True, help="Replace maps and overlays already in --out (default: such images fail).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@ray_option_flags
def explain(
    images: tuple[str, ...],
    bundle_dir: str,
    method: str,
    target: str,
    backend: str,
    engine: str,
    model_spec: str | None,
    batch_size: int,
    out_dir: str,
    overwrite: bool,
    fmt: str,
    ray_address: str | None,
    ray_actors: int | None,
    ray_cpus_per_actor: float,
    **method_flags: object,
) -> None:
    """Compute saliency maps for IMAGES; write a .npy map and a .png overlay per image.

    An unreadable image, an out-of-range target or an output that already exists (without
    --overwrite) is reported by name, the other images are still explained, and the exit status
    is 1. Files are written atomically; --out is checked for writing before any work.
    """
    from tqdm import tqdm

    from opticam_rt.runtime.explainer import Explainer
    from opticam_rt.runtime.files import explain_files, parse_target

    options = options_for([method], pop_method_options(method_flags))[method]
    # Bars are drawn once the bundle has loaded: a load error must be the first thing on stderr,
    # not the tail of a bar's "0%" line.
    bars: dict[str, Any] = {}

    def start_bars(on_ray: bool) -> None:
        bars["images"] = tqdm(total=len(images), desc=method, unit="img", file=sys.stderr, disable=len(images) <= 3)
        bars["steps"] = _steps_bar(method, options, len(images), engine, on_ray)

    def report(result: "FileResult") -> None:  # noqa: F821
        bar = bars["images"]
        bar.update(1)
        if result.error:
            bar.write(f"error: {result.error}", file=sys.stderr)
        elif fmt == "text":
            r = result.record
            steps = f" {r['steps']}/{r['iterations']} steps" if "steps" in r else ""
            bar.write(
                f"{r['image']}: {r['class_name'] or r['target']} (class {r['target']}) p={r['score']:.3f} "
                f"masked p={r['masked_score']:.3f}{steps} {r['seconds']:.2f} s/image on {r['backend']} "
                f"-> {r['overlay']}"
            )

    ray = ray_config(ray_address, ray_actors, ray_cpus_per_actor, backend, engine)
    try:
        if ray is not None:
            from opticam_rt.scale import explain_files_on_ray

            start_bars(on_ray=True)
            results = explain_files_on_ray(
                bundle_dir, images, method, parse_target(target), batch_size, out_dir, ray, on_result=report,
                overwrite=overwrite, **options
            )
        else:
            with Explainer(bundle_dir, backend=backend, engine=engine, model=model_spec) as explainer:
                start_bars(on_ray=False)
                steps_bar = bars["steps"]
                results = explain_files(
                    explainer, images, method, parse_target(target), batch_size, out_dir, on_result=report,
                    overwrite=overwrite, progress=steps_bar.update if steps_bar else None, **options
                )
    finally:
        for bar in bars.values():
            if bar is not None:
                bar.close()
    if fmt == "json":
        click.echo(json.dumps([r.record if r.record else {"image": r.image, "error": r.error} for r in results], indent=2))
    failed = [r for r in results if r.error]
    if failed:
        click.echo(f"{len(failed)} of {len(results)} images failed", err=True)
        sys.exit(EXIT_SOME_FAILED)


def _steps_bar(method: str, options: dict, images: int, engine: str, on_ray: bool) -> object | None:
    """A bar of optimisation steps (image x step) for an iterative method on the host engine:
    Opti-CAM's 100 steps per image are seconds each batch, and the per-image bar moves only
    when a whole batch is written. None for one-shot methods, the graph engine (one call) and Ray."""
    from tqdm import tqdm

    from opticam_rt.runtime.explainer import method_class

    if engine != "host" or on_ray or "iterations" not in method_class(method).Options.names():
        return None
    iterations = int(options.get("iterations", getattr(method_class(method).Options(), "iterations")))
    return tqdm(total=images * iterations, desc=f"{method} steps", unit="step", file=sys.stderr, leave=False)
