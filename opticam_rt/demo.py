"""The demo: explain photos that ship with installed packages using the built-in EfficientNet-Lite0."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from opticam_rt.cache import builtin_bundle
from opticam_rt.errors import InputError
from opticam_rt.images import sample_photos, to_model_input
from opticam_rt.comparison import ComparisonRow, save_comparison
from opticam_rt.overlay import overlay, save_png
from opticam_rt.runtime.explainer import Explainer

DEMO_METHODS = ("grad-cam", "opti-cam")
#: Classes listed per photo: the top-1 alone can surprise (the astronaut's is "bobsled").
TOP_K = 3


@dataclass
class DemoResult:
    overlays: list[Path]
    comparison: Path
    rows: list[dict]
    #: photo -> the model's TOP_K classes as {"class", "class_name", "p"}, best first
    top: dict[str, list[dict]] = field(default_factory=dict)
    #: False when matplotlib is missing and comparison.png has no titles or captions
    titled: bool = True


def run_demo(
    out_dir: str | Path,
    backend: str = "auto",
    method_options: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> DemoResult:
    """Explain the sample photos with Grad-CAM and Opti-CAM; write overlays and a comparison PNG.

    ``method_options``: method -> its options (e.g. ``{"opti-cam": {"iterations": 50}}``).
    Every file is written atomically; ``out_dir`` is checked before any work: it must be
    writable and, unless ``overwrite``, hold none of the files the demo writes (OutputError).
    """
    from opticam_rt.outputs import check_new_file, check_writable_folder, write_file

    say = log or (lambda m: None)
    photos = sample_photos()
    if not photos:
        raise InputError("no sample photos found: pip install 'opticam-rt[all]' (scikit-image ships them)")
    out = check_writable_folder(out_dir)
    names = list(photos)
    for name in names:
        for method in DEMO_METHODS:
            for suffix in ("png", "npy"):
                check_new_file(out / f"{name}.{method}.{suffix}", overwrite)
    check_new_file(out / "comparison.png", overwrite)
    bundle = builtin_bundle(log=say)
    images = np.stack([to_model_input(photos[n], tuple(bundle.manifest.input_size)) for n in names])
    figure_rows = {n: ComparisonRow(n, photos[n], "") for n in names}
    overlays: list[Path] = []
    rows: list[dict] = []
    with Explainer(bundle, backend=backend) as explainer:
        top = _top_classes(explainer.predict_proba(images), bundle.class_name, names)
        for n in names:
            figure_rows[n].top = [(t["class_name"] or str(t["class"]), t["p"]) for t in top[n]]
        for method in DEMO_METHODS:
            say(f"{method}: explaining {len(names)} photos ({', '.join(names)}) on {explainer.runner_for(method).name}")
            result = explainer.explain(images, method=method, **(method_options or {}).get(method, {}))
            for i, name in enumerate(names):
                picture = overlay(photos[name], result.maps[i])
                saliency = result.maps[i]
                write_file(out / f"{name}.{method}.npy", lambda f: np.save(f, saliency), overwrite)
                overlays.append(save_png(picture, out / f"{name}.{method}.png", overwrite))
                figure_rows[name].class_name = result.class_names[i] or str(int(result.targets[i]))
                figure_rows[name].cells[method] = (picture, float(result.scores[i]), float(result.masked_scores[i]))
                rows.append({"image": name, **result.record(i), "overlay": str(overlays[-1])})
            say(f"{method}: {result.seconds:.1f} s")
    comparison, titled = save_comparison([figure_rows[n] for n in names], DEMO_METHODS, out / "comparison.png", overwrite)
    if not titled:
        say("comparison.png has no titles or captions: matplotlib is not installed (pip install 'opticam-rt[all]')")
    return DemoResult(overlays, comparison, rows, top, titled)


def _top_classes(proba: np.ndarray, class_name: Callable[[int], str | None], names: list[str]) -> dict[str, list[dict]]:
    """proba (N, C) -> photo name -> its TOP_K classes, best first."""
    order = np.argsort(-proba, axis=1)[:, :TOP_K]
    return {
        name: [{"class": int(c), "class_name": class_name(int(c)), "p": float(proba[i, c])} for c in order[i]]
        for i, name in enumerate(names)
    }
