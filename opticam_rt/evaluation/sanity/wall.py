"""The "see through walls" test (Taimeskhanov, Sicre, Garreau; arXiv 2404.01964).

The model is wrapped so that a region of its input is multiplied by zero before the network
sees it (after the graph's mean/std normalisation, so the hidden pixels read as the mean
colour whatever they were): the model provably cannot use them. Each method's map of the
wrapped model is then measured in that region. A faithful map puts no saliency where the model
cannot look; the control, the wrapped model's own input gradient, is exactly zero there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from opticam_rt.errors import InputError
from opticam_rt.evaluation.sanity.similarity import finite_or_none
from opticam_rt.export.tap import TapSpec

__all__ = [
    "REGIONS",
    "WALL_PREFIX",
    "WallSettings",
    "WalledModel",
    "hidden_mask",
    "hidden_mass",
    "hidden_peak",
    "parse_region",
    "run_wall",
    "summarise_wall",
    "walled_tap",
]

#: Named regions as (x0, y0, x1, y1) fractions of the width and height (inclusive-exclusive).
REGIONS: dict[str, tuple[float, float, float, float]] = {
    "lower": (0.0, 0.5, 1.0, 1.0),
    "upper": (0.0, 0.0, 1.0, 0.5),
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 1.0, 1.0),
}

#: The wrapper's attribute holding the user's model: its modules are ``model.<path>``.
WALL_PREFIX = "model"


def parse_region(text: str) -> tuple[float, float, float, float]:
    """``lower``/``upper``/``left``/``right`` or ``x0,y0,x1,y1`` as fractions of width and height in [0, 1]."""
    if text in REGIONS:
        return REGIONS[text]
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise InputError(f"region {text!r}: use one of {', '.join(REGIONS)} or x0,y0,x1,y1 as fractions in [0, 1]")
    x0, y0, x1, y1 = box
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise InputError(f"region {text!r}: need 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (fractions of the image)")
    return box  # type: ignore[return-value]


def hidden_mask(region: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool, True on the hidden pixels of ``region`` (fractions) at model resolution ``size`` = (H, W)."""
    h, w = size
    x0, y0, x1, y1 = region
    r0, r1 = int(round(y0 * h)), int(round(y1 * h))
    c0, c1 = int(round(x0 * w)), int(round(x1 * w))
    mask = np.zeros((h, w), dtype=bool)
    mask[r0:r1, c0:c1] = True
    if not mask.any() or mask.all():
        raise InputError(f"region {tuple(region)} covers {'no' if not mask.any() else 'every'} pixel of a {h}x{w} input")
    return mask


class WalledModel(nn.Module):
    """``model`` that sees ``x * visible``: the hidden pixels are zeroed before it runs.

    hidden (H, W) bool. The wrapped model is the attribute ``model``, so its tap ``a.b@i``
    is ``model.a.b@i`` here (:func:`walled_tap`).
    """

    def __init__(self, model: nn.Module, hidden: np.ndarray) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("visible", torch.from_numpy(~np.asarray(hidden, dtype=bool)).float()[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.visible)


def walled_tap(tap: str) -> str:
    """The tap of the user's model as a path inside :class:`WalledModel`."""
    spec = TapSpec.parse(tap)
    return str(TapSpec(f"{WALL_PREFIX}.{spec.module_path}", spec.call_index))


def hidden_mass(maps: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Share of each map's total saliency that lies in the hidden region: maps (N, H, W) -> (N,); NaN for an all-zero map."""
    maps = np.asarray(maps, dtype=np.float64)
    total = maps.sum(axis=(1, 2))
    inside = maps[:, hidden].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)


def hidden_peak(maps: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Whether each map's maximum (first in row-major order on ties) is in the hidden region: (N, H, W) -> (N,) bool."""
    maps = np.asarray(maps)
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    return hidden.ravel()[flat]


@dataclass
class WallSettings:
    """``region`` (x0, y0, x1, y1) fractions; ``method_options``: method -> its options (declared
    defaults otherwise); ``backend``: an ONNX Runtime backend."""

    methods: Sequence[str]
    region: tuple[float, float, float, float] = REGIONS["lower"]
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 8
    backend: str = "auto"
    control: bool = True

    def key_settings(self) -> dict[str, Any]:
        return {"region": list(self.region)}


def run_wall(
    sm: "SanityModel",  # noqa: F821
    images: Mapping[str, np.ndarray],
    settings: WallSettings,
    store: "SanityRecords",  # noqa: F821
    log: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Explain ``images`` (name -> (3, H, W) in [0, 1]) on the walled model with every method.

    Records per (method, image): ``target`` (the walled model's top-1), ``hidden_mass``,
    ``hidden_peak`` (0/1) and ``hidden_area``; the control's are under ``input-gradient``.
    Records already in ``store`` under the same key are reused. Returns {method: records}.
    """
    from opticam_rt.cache import cache_dir
    from opticam_rt.evaluation.sanity.explain import CONTROL, explain_maps, input_gradient_maps, method_options
    from opticam_rt.evaluation.sanity.models import bundle_hashes, cached_export, derived_dir, model_fingerprint
    from opticam_rt.evaluation.sanity.records import key_id, record_key
    from opticam_rt.runtime.explainer import Explainer

    say = log or (lambda m: None)
    hidden = hidden_mask(settings.region, sm.input_size)
    area = float(hidden.mean())
    model = sm.build()
    export_key = {"check": "wall", "model": model_fingerprint(model), **sm.settings(), **settings.key_settings()}
    directory = derived_dir(cache_dir(), sm, "wall", export_key)
    bundle = cached_export(WalledModel(model, hidden), directory, export_key, sm, walled_tap(sm.tap), log=say)
    names = list(images)
    stack = np.stack([images[n] for n in names]).astype(np.float32)
    produced_by = bundle_hashes(bundle)
    out: dict[str, list[dict[str, Any]]] = {}
    todo = [*settings.methods, *([CONTROL] if settings.control else [])]
    with Explainer(bundle, backend=settings.backend) as explainer:
        top1 = explainer.predict(stack)[0].argmax(axis=1)
        for method in todo:
            options = method_options(method, settings.method_options) if method != CONTROL else {}
            key = key_id(record_key("wall", produced_by, method, options, settings.key_settings()))
            done = {r["image"]: r for r in store.for_key(key)}
            pending = [i for i, n in enumerate(names) if n not in done]
            if pending:
                say(f"{method}: {len(pending)} image(s) on the walled model")
                if method == CONTROL:
                    maps = input_gradient_maps(bundle, stack[pending], top1[pending])
                    targets = top1[pending]
                    if progress:
                        progress(len(pending))
                else:
                    maps, targets = explain_maps(explainer, stack[pending], method, options, top1[pending],
                                                 settings.batch_size, progress)
                mass, peak = hidden_mass(maps, hidden), hidden_peak(maps, hidden)
                new = [
                    {"key": key, "check": "wall", "method": method, "image": names[i], "target": int(targets[j]),
                     "hidden_mass": finite_or_none(mass[j]), "hidden_peak": int(peak[j]), "hidden_area": area}
                    for j, i in enumerate(pending)
                ]
                store.append(new)
                done.update({r["image"]: r for r in new})
            elif progress:
                progress(len(names))
            out[method] = [done[n] for n in names]
    return out


def summarise_wall(records: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """{method: {n_images, hidden_mass, hidden_peak, hidden_area}}: means over images (None if no value)."""
    summary: dict[str, dict[str, float | None]] = {}
    for method, rows in records.items():
        entry: dict[str, float | None] = {"n_images": len(rows)}
        for column in ("hidden_mass", "hidden_peak", "hidden_area"):
            values = [r[column] for r in rows if r.get(column) is not None]
            entry[column] = float(np.mean(values)) if values else None
        summary[method] = entry
    return summary
