"""The demo: explain photos that ship with installed packages using the built-in EfficientNet-Lite0."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from opticam_rt.cache import builtin_bundle
from opticam_rt.errors import InputError
from opticam_rt.images import sample_photos, to_model_input
from opticam_rt.overlay import overlay, save_png, side_by_side
from opticam_rt.runtime.explainer import Explainer

DEMO_METHODS = ("grad-cam", "opti-cam")


@dataclass
class DemoResult:
    overlays: list[Path]
    comparison: Path
    rows: list[dict]


def run_demo(
    out_dir: str | Path,
    backend: str = "auto",
    method_options: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
) -> DemoResult:
    """Explain the sample photos with Grad-CAM and Opti-CAM; write overlays and a comparison PNG.

    ``method_options``: method -> its options (e.g. ``{"opti-cam": {"iterations": 50}}``).
    """
    say = log or (lambda m: None)
    photos = sample_photos()
    if not photos:
        raise InputError("no sample photos found: pip install 'opticam-rt[all]' (scikit-image ships them)")
    bundle = builtin_bundle(log=say)
    out = Path(out_dir)
    names = list(photos)
    images = np.stack([to_model_input(photos[n], tuple(bundle.manifest.input_size)) for n in names])
    panels: dict[str, list[np.ndarray]] = {n: [photos[n]] for n in names}
    overlays: list[Path] = []
    rows: list[dict] = []
    with Explainer(bundle, backend=backend) as explainer:
        for method in DEMO_METHODS:
            say(f"{method}: explaining {len(names)} photos ({', '.join(names)}) on {explainer.runner_for(method).name}")
            result = explainer.explain(images, method=method, **(method_options or {}).get(method, {}))
            for i, name in enumerate(names):
                picture = overlay(photos[name], result.maps[i])
                overlays.append(save_png(picture, out / f"{name}.{method}.png"))
                np.save(out / f"{name}.{method}.npy", result.maps[i])
                panels[name].append(picture)
                rows.append({"image": name, **result.record(i), "overlay": str(overlays[-1])})
            say(f"{method}: {result.seconds:.1f} s")
    comparison = save_png(side_by_side([panels[n] for n in names]), out / "comparison.png")
    return DemoResult(overlays, comparison, rows)
