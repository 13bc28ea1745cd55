"""``opticam-rt sanity wall`` and ``opticam-rt sanity randomisation``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import click

from opticam_rt.cli.export_cmd import _floats, _size
from opticam_rt.cli.method_options import method_option_flags, options_for, pop_method_options
from opticam_rt.runtime.runners import BACKENDS

#: Every backend but the PyTorch reference: the walled and re-initialised models exist only as
#: bundles (nothing to rebuild in PyTorch), so ``torch`` could not run them.
SANITY_BACKENDS = tuple(b for b in BACKENDS if b != "torch")


def _common_options(func: Callable) -> Callable:
    """Options both checks share: the model (as ``export``), methods, backend and output."""
    options = [
        click.argument("images", nargs=-1, required=True, type=click.Path(exists=True)),
        click.option("--model", "model_spec", required=True,
                     help="Built-in name (efficientnet-lite0) or pkg.module:factory, as for export."),
        click.option("--layer", default=None, help="Tap layer of a user's model (dotted module path; name@i for a shared module)."),
        click.option("--input-size", default=None, help="Input size of a user's model: 224 or HxW such as 224x320 (as for export)."),
        click.option("--mean", default=None, help="Per-channel mean on pixels in [0, 1] of a user's model."),
        click.option("--std", default=None, help="Per-channel std on pixels in [0, 1] of a user's model."),
        click.option("--methods", default="all", show_default=True, help="Comma-separated method names, or 'all'."),
        click.option("--backend", type=click.Choice(SANITY_BACKENDS), default="auto", show_default=True,
                     help="Runtime of the maps; auto picks per method. Not torch: the derived models exist only as bundles."),
        click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Images explained together."),
        click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True),
        click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None, help="Write the report here too."),
        click.option("--records", "records_file", type=click.Path(dir_okay=False), default=None,
                     help="Per-image results (JSON lines); a rerun resumes from it. Default: <--out>.records.jsonl "
                     "else a file in the cache named for the check, model and images."),
        click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, help="Plot the results (PNG/PDF)."),
        click.option("--html", "html_file", type=click.Path(dir_okay=False), default=None,
                     help="A self-contained HTML report: the table and the plot."),
        click.option("--overwrite", is_flag=True, help="Replace an existing --out, --plot or --html file (default: refuse, before any work)."),
    ]
    for option in reversed(options):
        func = option(func)
    return method_option_flags()(func)


def _setup(check: str, images: tuple[str, ...], model_spec: str, layer: str | None, input_size: str | None,
           mean: str | None, std: str | None, methods: str, out_file: str | None,
           records_file: str | None, plot_file: str | None = None,
           overwrite: bool = False, html_file: str | None = None) -> tuple[Any, dict, list[str], Any, list[str]]:
    """(model, images by path, method names, records store, unreadable images); a --plot that
    could not be drawn (no matplotlib), an --out or --plot that exists (without ``overwrite``)
    or cannot be written, and two outputs naming one file are refused here, before any work."""
    from opticam_rt.errors import InputError
    from opticam_rt.evaluation.datasets import IMAGE_EXTENSIONS
    from opticam_rt.evaluation.sanity import SanityModel, SanityRecords
    from opticam_rt.images import load_image
    from opticam_rt.outputs import check_distinct_paths, check_new_file, check_writable_folder
    from opticam_rt.methods import REGISTRY

    records_given = records_file or (f"{out_file}.records.jsonl" if out_file else None)
    check_distinct_paths({"--out": out_file, "--plot": plot_file, "--html": html_file, "--records": records_given},
                         {f"image {i}": p for i, p in enumerate(images)})
    for path, option in ((out_file, "--out"), (plot_file, "--plot"), (html_file, "--html"), (records_given, "--records")):
        if path:
            check_writable_folder(Path(path).parent, option)
            if option != "--records":
                check_new_file(path, overwrite)

    if plot_file or html_file:
        from opticam_rt.plotting import require_matplotlib

        require_matplotlib("--plot" if plot_file else "--html")
    names = list(REGISTRY) if methods.strip() == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in REGISTRY]
    if unknown or not names:
        raise InputError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(REGISTRY)}")
    sm = SanityModel.load(model_spec, layer, _size(input_size), _floats(mean, "--mean"), _floats(std, "--std"))
    paths: list[Path] = []
    for item in map(Path, images):
        paths.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if item.is_dir() else [item])
    loaded, bad = {}, []
    for path in paths:
        try:
            loaded[str(path)] = load_image(path, sm.input_size).pixels
        except InputError as exc:
            click.echo(f"skipped: {exc}", err=True)
            bad.append(str(path))
    if not loaded:
        raise InputError("no readable image among the ones given")
    from opticam_rt.cache import default_records_path
    from opticam_rt.cli import plural

    if records_file or out_file:
        records_path = Path(records_file or f"{out_file}.records.jsonl")
    else:  # not into the current folder: the cache, one file per check, model and images
        records_path = default_records_path(f"sanity-{check}", model_spec, *sorted(loaded))
        records_path.parent.mkdir(parents=True, exist_ok=True)
    store = SanityRecords(records_path)
    click.echo(f"{plural(len(loaded), 'image')} x {plural(len(names), 'method')} on {sm.name}; "
               f"per-image results in {store.path}", err=True)
    return sm, loaded, names, store, bad


def _write_html(path: str, title: str, table: str, plot: Callable[[Path], Any], overwrite: bool) -> None:
    """The report as one HTML file: the table as text, the plot embedded."""
    import tempfile

    from opticam_rt.evaluation.html_report import render_text_html
    from opticam_rt.outputs import write_file

    with tempfile.TemporaryDirectory() as tmp:
        png = plot(Path(tmp) / "plot.png").read_bytes()
    page = render_text_html(title, table, [("the results plotted", png)])
    write_file(path, lambda f: f.write(page.encode()), overwrite)
    click.echo(f"HTML report written to {path}", err=True)


def _finish(text: str, out_file: str | None, bad: list[str], overwrite: bool = False) -> None:
    from opticam_rt.outputs import write_file

    click.echo(text, nl=False)
    if out_file:
        write_file(out_file, lambda f: f.write(text.encode()), overwrite)
    if bad:
        click.echo(f"{len(bad)} image(s) skipped", err=True)
        sys.exit(1)


@click.group()
def sanity() -> None:
    """Sanity checks of the saliency methods on your model: 'see through walls' and parameter randomisation."""


@sanity.command()
@_common_options
@click.option("--region", default="lower", show_default=True,
              help="Hidden region: lower, upper, left, right, or x0,y0,x1,y1 as fractions of width and height.")
@click.option("--no-control", is_flag=True, help="Leave out the input-gradient control.")
@click.option("--wall", "wall_kind", type=click.Choice(["input", "features"]), default="input", show_default=True,
              help="input: the region's pixels are zeroed before the model; features: the walls paper's own wall, "
              "the tap's cells in the region are zeroed for the layers after it (for a pooled dense head: the dense "
              "layer's weights for those rows are zero), while the CAM methods still see them.")
def wall(images: tuple[str, ...], model_spec: str, layer: str | None, input_size: str | None, mean: str | None,
         std: str | None, methods: str, backend: str, batch_size: int, fmt: str,
         out_file: str | None, records_file: str | None, plot_file: str | None, html_file: str | None,
         overwrite: bool, region: str,
         no_control: bool, wall_kind: str, **method_flags: Any) -> None:
    """Hide a region from the model (zeroed before it runs) and measure each method's saliency there.

    Reports per method hidden_mass (share of saliency in the hidden region), hidden_peak (share
    of images whose map peaks there), hidden_l2 (the walls paper's measure: L2 norm of the map
    in the region over the L2 norm of the whole map) and hidden_area (the region's share of the
    image). The control, input-gradient, is the walled model's own gradient: exactly 0 in the
    region with the input wall.
    """
    from tqdm import tqdm

    from opticam_rt.evaluation.sanity import WallSettings, format_wall, parse_region, plot_wall, run_wall, summarise_wall

    box = parse_region(region)
    sm, loaded, names, store, bad = _setup("wall", images, model_spec, layer, input_size, mean, std, methods,
                                           out_file, records_file, plot_file, overwrite, html_file)
    settings = WallSettings(methods=names, region=box, method_options=options_for(names, pop_method_options(method_flags)),
                            batch_size=batch_size, backend=backend, control=not no_control, wall=wall_kind)
    bar = tqdm(total=len(loaded) * (len(names) + (not no_control)), desc="wall", unit="img", file=sys.stderr)
    records = run_wall(sm, loaded, settings, store, log=lambda m: bar.write(m, file=sys.stderr), progress=bar.update)
    bar.close()
    summary = summarise_wall(records)
    if plot_file:
        click.echo(f"plotted to {plot_wall(summary, plot_file, overwrite=overwrite)}", err=True)
    if html_file:
        _write_html(html_file, f"opticam-rt sanity wall: {model_spec}", format_wall(summary, "table"),
                    lambda path: plot_wall(summary, path), overwrite)
    _finish(format_wall(summary, fmt), out_file, bad, overwrite)


@sanity.command()
@_common_options
@click.option("--steps", type=click.IntRange(min=1), default=4, show_default=True,
              help="Cascade steps, top down: layers above the tap, the tap's block, the blocks below.")
@click.option("--cascade", "cascade_text", default=None,
              help="Explicit cascade instead: steps separated by ';', module paths by ',' (e.g. 'fc;layer4.2;layer4.1').")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the re-initialised weights.")
def randomisation(images: tuple[str, ...], model_spec: str, layer: str | None, input_size: str | None,
                  mean: str | None, std: str | None, methods: str, backend: str, batch_size: int,
                  fmt: str, out_file: str | None, records_file: str | None, plot_file: str | None, html_file: str | None,
                  overwrite: bool,
                  steps: int, cascade_text: str | None, seed: int, **method_flags: Any) -> None:
    """Re-initialise the model's layers from the top down and compare each method's maps with the original ones.

    Each cascade step is exported (and cached) like the original; the report gives, per method
    and step, the mean Spearman rank correlation and SSIM with the original model's maps for
    the same target classes. High similarity after randomisation means the map does not
    depend on what the model learned.
    """
    from tqdm import tqdm

    from opticam_rt.evaluation.sanity import (
        RandomisationSettings,
        format_randomisation,
        plot_randomisation,
        run_randomisation,
        summarise_randomisation,
    )

    sm, loaded, names, store, bad = _setup("randomisation", images, model_spec, layer, input_size, mean, std,
                                           methods, out_file, records_file, plot_file, overwrite, html_file)
    settings = RandomisationSettings(methods=names, steps=steps, cascade_text=cascade_text, seed=seed,
                                     method_options=options_for(names, pop_method_options(method_flags)),
                                     batch_size=batch_size, backend=backend)
    bar = tqdm(total=len(loaded) * len(names) * (steps if cascade_text is None else cascade_text.count(";") + 1),
               desc="randomisation", unit="map", file=sys.stderr)
    cascade, records = run_randomisation(sm, loaded, settings, store, log=lambda m: bar.write(m, file=sys.stderr),
                                         progress=bar.update)
    bar.close()
    summary = summarise_randomisation(cascade, records)
    if plot_file:
        click.echo(f"plotted to {plot_randomisation(summary, plot_file, overwrite=overwrite)}", err=True)
    if html_file:
        _write_html(html_file, f"opticam-rt sanity randomisation: {model_spec}", format_randomisation(summary, "table"),
                    lambda path: plot_randomisation(summary, path), overwrite)
    _finish(format_randomisation(summary, fmt), out_file, bad, overwrite)
