"""``opticam-rt demo``."""

from __future__ import annotations

import json

import click

from opticam_rt.cli.method_options import method_option_flags, options_for, pop_method_options
from opticam_rt.demo import DEMO_METHODS
from opticam_rt.runtime.runners import BACKENDS


@click.command()
@click.option("--out", "out_dir", default="opticam-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier run in --out (default: refuse, before any work).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@method_option_flags(DEMO_METHODS)
def demo(out_dir: str, backend: str, overwrite: bool, fmt: str, **method_flags: object) -> None:
    """Explain bundled sample photos with Grad-CAM and Opti-CAM (built-in EfficientNet-Lite0).

    Exports the model to the cache on first use ($OPTICAM_RT_CACHE overrides the location).
    """
    from opticam_rt.demo import run_demo

    options = options_for(DEMO_METHODS, pop_method_options(method_flags))
    result = run_demo(out_dir, backend=backend, method_options=options, log=lambda m: click.echo(m, err=True),
                      overwrite=overwrite)
    if fmt == "json":
        click.echo(json.dumps({"comparison": str(result.comparison), "top": result.top, "results": result.rows}, indent=2))
        return
    for image, classes in result.top.items():
        listed = ", ".join(f"{c['class_name'] or c['class']} {c['p']:.3f}" for c in classes)
        click.echo(f"{image:<10} top-{len(classes)}: {listed}")
    for row in result.rows:
        click.echo(
            f"{row['image']:<10} {row['method']:<9} {row['class_name'] or row['target']:<20} "
            f"p={row['score']:.3f} masked p={row['masked_score']:.3f}  {row['overlay']}"
        )
    click.echo(f"side-by-side comparison (photo | {' | '.join(DEMO_METHODS)}): {result.comparison}")
