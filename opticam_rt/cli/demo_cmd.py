"""``opticam-rt demo``."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--out", "out_dir", default="opticam-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--backend", default="auto", show_default=True, help="auto, ort-cpu, ort-cuda, ort-trt or torch.")
@click.option("--iterations", type=int, default=100, show_default=True, help="Opti-CAM iterations.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def demo(out_dir: str, backend: str, iterations: int, fmt: str) -> None:
    """Explain bundled sample photos with Grad-CAM and Opti-CAM (built-in EfficientNet-Lite0).

    Exports the model to the cache on first use ($OPTICAM_RT_CACHE overrides the location).
    """
    from opticam_rt.demo import run_demo

    result = run_demo(out_dir, backend=backend, iterations=iterations, log=lambda m: click.echo(m, err=True))
    if fmt == "json":
        click.echo(json.dumps({"comparison": str(result.comparison), "results": result.rows}, indent=2))
        return
    for row in result.rows:
        click.echo(
            f"{row['image']:<10} {row['method']:<9} {row['class_name'] or row['target']:<20} "
            f"p={row['score']:.3f} masked p={row['masked_score']:.3f}  {row['overlay']}"
        )
    click.echo(f"side-by-side comparison (photo | grad-cam | opti-cam): {result.comparison}")
