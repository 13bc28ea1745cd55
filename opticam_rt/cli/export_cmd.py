"""``opticam-rt export`` and ``opticam-rt layers``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from opticam_rt.errors import ExportError, InputError


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


def _size(text: str | None) -> tuple[int, int] | None:
    """'224' -> (224, 224); '224x320' -> (224, 320), height first."""
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"--input-size {text!r} is not a size: use 224 or HxW such as 224x320")
    height, width = int(parts[0]), int(parts[-1])
    return height, width


@click.command()
@click.option("--model", "model_spec", required=True, help="Built-in name (efficientnet-lite0) or pkg.module:factory.")
@click.option(
    "--layer",
    default=None,
    help="Tap layer (dotted module path; name@i picks a call of a shared module), or 'auto': the last "
    "feature map before pooling, or a transformer's last block (first LayerNorm) with --token-reshape implied.",
)
@click.option("--input-size", default=None, help="Input size in pixels: 224, or HxW such as 224x320.")
@click.option(
    "--token-reshape",
    is_flag=True,
    help="The tap outputs transformer tokens (N, T, D): drop the class/register tokens and lay the patch "
    "tokens out on the patch grid (N, D, h, w). Such a bundle has no head graph (no ablation-cam).",
)
@click.option(
    "--channels-last/--channels-first",
    "channels_last",
    default=None,
    help="The tap's 4-D output is (N, H, W, C) (Swin's norm, channels-last stages) or (N, C, H, W). "
    "Default: as the shapes tell (a last dimension equal to the layer's or the classifier's channel count; "
    "`opticam-rt layers` shows it), else channels-first.",
)
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
    input_size: str | None,
    token_reshape: bool,
    channels_last: bool | None,
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
        token_reshape=token_reshape,
        channels_last=channels_last,
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


def _features(shape: tuple[int, ...], layout) -> tuple[int, int, int]:
    """The (C, H, W) feature map a 4-D output becomes under ``layout``."""
    return (shape[3], shape[1], shape[2]) if layout.channels_last else (shape[1], shape[2], shape[3])


@click.command()
@click.option("--model", "model_spec", required=True, help="Built-in name or pkg.module:factory.")
@click.option("--input-size", default=None, help="224 or HxW such as 224x320 (default: the model's own or 224).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def layers(model_spec: str, input_size: str | None, fmt: str) -> None:
    """List candidate tap layers (modules with a 4-D output, with the layout assumed), and token layers with the
    grid they reshape to."""
    import torch

    from opticam_rt.export import auto_tap, load_recipe, prepare_model, token_layers
    from opticam_rt.export.tap import map_layers

    from opticam_rt.bundle import check_input_size

    recipe = load_recipe(model_spec)
    size = check_input_size(_size(input_size) or recipe.input_size or (224, 224))
    model = prepare_model(recipe.build())
    example = torch.zeros(1, 3, *size)
    maps = map_layers(model, example)
    tokens = token_layers(model, example)
    try:
        auto = str(auto_tap(model, example)[0])
    except ExportError:
        auto = None
    if fmt == "json":
        rows: list[dict] = [
            {"layer": n, "shape": list(s[1:]), "layout": lay.name, "layout_from": lay.reason,
             "features": list(_features(s, lay))}
            for n, s, lay in maps
        ]  # fmt: skip
        rows += [
            {"layer": n, "shape": list(s[1:]), "tokens": {"prefix": g.prefix, "grid": [s[2], g.height, g.width]}}
            for n, s, g in tokens
        ]
        for row in rows:
            if row["layer"] == auto:
                row["auto"] = True
        click.echo(json.dumps(rows))
        return
    width = max((len(n) for n, *_ in [*maps, *tokens]), default=5)

    def mark(name: str) -> str:
        return "  (default tap)" if recipe.tap == name else "  (--layer auto)" if auto == name else ""

    for name, shape, lay in maps:
        shown = f"{tuple(shape[1:])} -> (C, H, W) {_features(shape, lay)}" if lay.channels_last else f"{tuple(shape[1:])}"
        click.echo(f"{name:<{width}}  {shown} {lay.name} ({lay.reason}){mark(name)}")
    for name, shape, grid in tokens:
        click.echo(
            f"{name:<{width}}  tokens {tuple(shape[1:])} -> ({shape[2]}, {grid.height}, {grid.width}) "
            f"with --token-reshape, {grid.prefix} prefix token(s) dropped{mark(name)}"
        )
