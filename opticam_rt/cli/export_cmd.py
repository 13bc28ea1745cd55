"""``opticam-rt export`` and ``opticam-rt layers``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from opticam_rt.errors import ExportError


def _floats(text: str | None, option: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not a list of numbers", param_hint=option) from exc
    if len(values) == 1:
        values = values * 3
    return values


def _size(value: int | None) -> tuple[int, int] | None:
    return None if value is None else (value, value)


@click.command()
@click.option("--model", "model_spec", required=True, help="Built-in name (efficientnet-lite0) or pkg.module:factory.")
@click.option("--layer", default=None, help="Tap layer (dotted module path; name@i picks a call of a shared module).")
@click.option("--input-size", type=int, default=None, help="Square input size in pixels, e.g. 224.")
@click.option("--mean", default=None, help="Per-channel mean on pixels in [0, 1], e.g. '0.485,0.456,0.406'.")
@click.option("--std", default=None, help="Per-channel std on pixels in [0, 1], e.g. '0.229,0.224,0.225'.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Bundle directory.")
@click.option("--force", is_flag=True, help="Overwrite a non-empty output directory.")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (>= 17).")
@click.option("--no-verify", is_flag=True, help="Skip the parity check against PyTorch.")
@click.option("--no-explainers", is_flag=True, help="Skip the self-contained explainer graphs (explain_*.onnx).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def export(
    model_spec: str,
    layer: str | None,
    input_size: int | None,
    mean: str | None,
    std: str | None,
    out_dir: str,
    force: bool,
    opset: int,
    no_verify: bool,
    no_explainers: bool,
    fmt: str,
) -> None:
    """Export a PyTorch classifier to an explainer bundle and verify it against PyTorch."""
    from opticam_rt.export import export_bundle, load_recipe

    recipe = load_recipe(model_spec)
    tap = layer or recipe.tap
    size = _size(input_size) or recipe.input_size
    mean_v = _floats(mean, "--mean") or recipe.mean
    std_v = _floats(std, "--std") or recipe.std
    missing = [n for n, v in (("--layer", tap), ("--input-size", size), ("--mean", mean_v), ("--std", std_v)) if v is None]
    if missing:
        raise ExportError(f"model {model_spec!r} is not built in: give {', '.join(missing)}")
    log = (lambda m: click.echo(m, err=True)) if fmt == "json" else click.echo
    bundle, report = export_bundle(
        recipe.build(),
        out_dir,
        tap=tap,  # type: ignore[arg-type]
        input_size=size,  # type: ignore[arg-type]
        mean=mean_v,  # type: ignore[arg-type]
        std=std_v,  # type: ignore[arg-type]
        class_names=recipe.class_names,
        model_name=recipe.name,
        model_spec=model_spec,
        opset=opset,
        force=force,
        verify=not no_verify,
        log=log,
        explainers=not no_explainers,
    )
    if fmt == "json":
        click.echo(json.dumps({"bundle": str(Path(out_dir)), "verification": report.to_dict() if report else None}))
    else:
        if report is not None:
            click.echo(report.format())
        click.echo(f"bundle written to {out_dir}")
    if report is not None and not report:
        raise ExportError("verification failed: see the report above (the bundle was written and is marked "
                          "as failed: loading it warns)")


@click.command()
@click.option("--model", "model_spec", required=True, help="Built-in name or pkg.module:factory.")
@click.option("--input-size", type=int, default=None, help="Square input size (default: the model's own or 224).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def layers(model_spec: str, input_size: int | None, fmt: str) -> None:
    """List candidate tap layers (modules with a 4-D output) and their output shapes."""
    import torch

    from opticam_rt.export import candidate_layers, load_recipe, prepare_model

    from opticam_rt.bundle import check_input_size

    recipe = load_recipe(model_spec)
    size = check_input_size(_size(input_size) or recipe.input_size or (224, 224))
    rows = candidate_layers(prepare_model(recipe.build()), torch.zeros(1, 3, *size))
    if fmt == "json":
        click.echo(json.dumps([{"layer": n, "shape": list(s[1:])} for n, s in rows]))
        return
    width = max((len(n) for n, _ in rows), default=5)
    for name, shape in rows:
        mark = "  (default tap)" if recipe.tap == name else ""
        click.echo(f"{name:<{width}}  {tuple(shape[1:])}{mark}")
