"""``opticam-rt evaluate``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from opticam_rt.cli import EXIT_SOME_FAILED, plural
from opticam_rt.cli.model_option import model_option
from opticam_rt.cli.method_options import method_option_flags, options_for, pop_method_options
from opticam_rt.evaluation.metric_names import PROTOCOLS, names as metric_names
from opticam_rt.runtime.explainer import ENGINES
from opticam_rt.cli.ray_options import ray_config, ray_option_flags
from opticam_rt.runtime.runners import BACKENDS


@click.command()
@click.argument("data", type=click.Path(exists=True))
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(file_okay=False), help="Bundle directory.")
@click.option("--methods", default="opti-cam,grad-cam,fake-cam", show_default=True, help="Comma-separated method names.")
@click.option("--metrics", default=None, help=f"Comma-separated: {','.join(metric_names())} (default: "
              f"{','.join(metric_names('classification') + metric_names('curve'))}, plus localisation when boxes are given).")
@click.option("--protocol", type=click.Choice(PROTOCOLS), default="standard", show_default=True,
              help="Localisation protocol: standard (pointing game 15 px, OM/LE at IoU 0.5) or the Opti-CAM paper's variants.")
@click.option("--boxes", "boxes_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV path,label,x0,y0,x1,y1 of ground-truth boxes (original image pixels).")
@click.option("--box-study", is_flag=True,
              help="Also the Opti-CAM paper's box study (its Figure 4): AD/AG/AI of the box B and of I\\B as maps, "
              "and of each method's S, B&S and S\\B; needs a box for every image.")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@click.option("--engine", type=click.Choice(ENGINES), default="host", show_default=True,
              help="host: the method's loop over the bundle graphs; graph: its self-contained explainer graph (ONNX Runtime).")
@model_option
@method_option_flags()
@click.option("--steps", type=click.IntRange(min=1), default=224, show_default=True, help="Insertion/deletion steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Images explained together.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None, help="Write the report here too.")
@click.option("--records", "records_file", type=click.Path(dir_okay=False), default=None,
              help="Per-image results (JSON lines); an interrupted run resumes from it. "
              "Default: <--out>.records.jsonl, else a file in the cache named for the bundle and DATA.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, help="Insertion/deletion curves (PNG/PDF).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), default=None,
              help="A self-contained HTML report: the table, the overlays of the first images side by side, the curves.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out, --plot or --html file (default: refuse).")
@ray_option_flags
def evaluate(
    data: str,
    bundle_dir: str,
    methods: str,
    metrics: str | None,
    protocol: str,
    boxes_csv: str | None,
    box_study: bool,
    backend: str,
    engine: str,
    model_spec: str | None,
    steps: int,
    batch_size: int,
    fmt: str,
    out_file: str | None,
    records_file: str | None,
    plot_file: str | None,
    html_file: str | None,
    overwrite: bool,
    ray_address: str | None,
    ray_actors: int | None,
    ray_cpus_per_actor: float,
    **method_flags: object,
) -> None:
    """Faithfulness (AD, AI, AG, insertion, deletion) and localisation metrics of saliency methods.

    DATA is a folder of images (class sub-folders give labels, otherwise the top-1 class is the
    target) or a CSV with columns path,label and optionally x0,y0,x1,y1.
    """
    import numpy as np
    from tqdm import tqdm

    from opticam_rt.errors import InputError
    from opticam_rt.evaluation import RecordStore, aggregate, format_report, load_samples, plot_curves
    from opticam_rt.evaluation.datasets import load_csv
    from opticam_rt.outputs import check_distinct_paths, check_new_file, check_writable_folder, write_file
    from opticam_rt.evaluation.metric_names import BY_NAME
    from opticam_rt.evaluation.runner import EvaluationSettings, evaluate_dataset, parse_metrics, run_key
    from opticam_rt.runtime.explainer import Explainer
    from opticam_rt.methods import REGISTRY

    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in method_list if m not in REGISTRY]
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(REGISTRY)}")
    method_options = options_for(method_list, pop_method_options(method_flags))
    from opticam_rt.cache import default_records_path

    records_path = Path(records_file or (f"{out_file}.records.jsonl" if out_file
                                         else default_records_path("eval", bundle_dir, data)))
    if not records_file and not out_file:
        records_path.parent.mkdir(parents=True, exist_ok=True)
    check_distinct_paths({"--out": out_file, "--plot": plot_file, "--html": html_file, "--records": records_path},
                         {"DATA": data, "--boxes": boxes_csv})
    for path, option in ((out_file, "--out"), (plot_file, "--plot"), (html_file, "--html"), (str(records_path), "--records")):
        if path:  # before any work: an unwritable output must not cost the run
            check_writable_folder(Path(path).parent, option)
            if option != "--records":
                check_new_file(path, overwrite)
    if plot_file or html_file:
        from opticam_rt.plotting import require_matplotlib

        require_matplotlib("--plot" if plot_file else "--html")
    ray = ray_config(ray_address, ray_actors, ray_cpus_per_actor, backend, engine)
    with Explainer(bundle_dir, backend=backend, engine=engine, model=model_spec) as explainer:
        samples = load_samples(data, explainer.bundle.manifest.class_names)
        if boxes_csv:
            by_path = {s.path.resolve(): s for s in load_csv(boxes_csv, explainer.bundle.manifest.class_names)}
            for s in samples:
                given = by_path.get(s.path.resolve())
                if given is not None:
                    s.boxes.extend(given.boxes)
                    s.box_sources.extend(given.box_sources)
                    s.box_problems.extend(given.box_problems)
        metric_list = parse_metrics(metrics, any(s.boxes or s.box_problems for s in samples))
        if box_study and not any(s.boxes or s.box_problems for s in samples):
            raise InputError("--box-study needs ground-truth boxes: give --boxes (CSV path,label,x0,y0,x1,y1) "
                             "or a DATA CSV with x0,y0,x1,y1 columns")
        store = RecordStore(records_path)
        settings = EvaluationSettings(steps=steps, batch_size=batch_size, method_options=method_options, protocol=protocol,
                                      box_study=box_study)
        errors: list[str] = []
        # The line before the bar: a bar drawn first would share its line with this message.
        on = ", ".join(f"{m} on {explainer.runner_for(m).name}" for m in method_list)
        click.echo(f"{plural(len(samples), 'image')} x {plural(len(method_list), 'method')} ({'Ray actors, ' if ray else ''}{on}"
                   f"{'; auto picks per method' if backend == 'auto' else ''}); per-image results in {records_path}", err=True)
        bar = tqdm(total=len(samples) * len(method_list), desc="evaluate", unit="img", file=sys.stderr,
                   disable=len(samples) * len(method_list) <= 3)

        def on_error(image: str, message: str) -> None:
            errors.append(image)
            bar.write(f"skipped: {message}", file=sys.stderr)

        if ray is not None:
            from opticam_rt.scale import evaluate_dataset_on_ray

            records = evaluate_dataset_on_ray(
                bundle_dir, samples, method_list, metric_list, store, settings, ray, on_error, bar.update,
                run_keys={m: run_key(explainer, m, metric_list, settings) for m in method_list},
            )
        else:
            records = evaluate_dataset(explainer, samples, method_list, metric_list, store, settings, on_error, bar.update)
        bar.close()
        if html_file:
            from opticam_rt.evaluation.report_figures import overlay_rows

            skipped = set(errors)
            shown = [s for s in samples if str(s.path) not in skipped]
            comparison = overlay_rows(explainer, shown, method_list, method_options)
    keep = {str(s.path) for s in samples}
    records = [r for r in records if r["method"] in method_list and r["image"] in keep]
    summary = aggregate(records)
    columns = ["n_images", *[BY_NAME[m].column for m in metric_list]]
    text = format_report(summary, fmt, columns)  # type: ignore[arg-type]
    if box_study:
        from opticam_rt.evaluation.box_study import COLUMNS as BOX_COLUMNS, box_study_summary

        study = box_study_summary(records, method_list)
        study_text = format_report(study, fmt, ["n_images", *BOX_COLUMNS])  # type: ignore[arg-type]
        if fmt == "json":
            import json

            text = json.dumps({"metrics": json.loads(text), "box_study": json.loads(study_text)}, indent=2) + "\n"
        else:
            heading = "" if fmt == "csv" else "Box study (Opti-CAM paper, Figure 4): B = the boxes, S = the method's map\n"
            text = f"{text.rstrip()}\n\n{heading}{study_text}"
    click.echo(text)
    if out_file:
        write_file(out_file, lambda f: f.write((text + "\n").encode()), overwrite)
    curves = {
        m: {mode: np.array([r[f"{mode}_curve"] for r in records if r["method"] == m and f"{mode}_curve" in r])
            for mode in ("insertion", "deletion")}
        for m in method_list
    }
    curves = {m: {k: v for k, v in c.items() if v.size} for m, c in curves.items()}
    if plot_file:
        click.echo(f"curves plotted to {plot_curves(curves, plot_file, overwrite=overwrite)}", err=True)
    if html_file:
        from opticam_rt.evaluation.report_figures import write_evaluate_html

        write_evaluate_html(html_file, summary, columns, comparison, method_list, curves, data, bundle_dir, overwrite)
        click.echo(f"HTML report written to {html_file}", err=True)
    if errors:
        click.echo(f"{len(set(errors))} image(s) skipped", err=True)
        sys.exit(EXIT_SOME_FAILED)
