"""The "see through walls" test (Taimeskhanov, Sicre, Garreau; arXiv 2404.01964).

Two walls. ``input`` (the default): the model is wrapped so that a region of its input is
multiplied by zero before the network sees it (after the graph's mean/std normalisation, so the
hidden pixels read as the mean colour whatever they were): the model provably cannot use them.
``features`` (the paper's own): the tap's feature map goes on unchanged to the CAM methods, but
the rest of the network sees it with the cells of the region zeroed; for the usual head
(global average pooling, then a dense layer) that is the paper's dense layer whose weights for
the bottom rows of the feature map are zero. Pixels there still reach the visible cells
through the receptive field, so the input gradient is not zero in the region, only small.

Each method's map of the walled model is then measured in the region (at image resolution):
``hidden_mass`` (share of the map's sum), ``hidden_peak`` (whether its maximum lies there) and
the paper's measure ``hidden_l2`` (L2 norm of the map in the region over the L2 norm of the
whole map). A faithful map puts no saliency where the model cannot look; the control, the
walled model's own input gradient, is exactly zero there for the input wall.
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
    "FeatureWalledModel",
    "WALLS",
    "hidden_l2",
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
#: Where the wall stands: on the input pixels, or between the tap and the rest of the network.
WALLS = ("input", "features")


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


class FeatureWalledModel(nn.Module):
    """``model`` whose tap output reaches the rest of the network with the hidden cells zeroed.

    The CAM methods tap the feature map before the wall (``walled_tap(tap)``, the same path as
    :class:`WalledModel`): they see the hidden cells, the classifier does not. ``cells`` is the
    (h, w) bool mask at the feature map's resolution. The wall is a forward hook registered
    inside :meth:`forward`, so it runs after any hook the exporter put on the tap first (the
    exporter captures the unwalled map and feeds its replacement through the wall).
    """

    def __init__(self, model: nn.Module, tap: str, cells: np.ndarray) -> None:
        super().__init__()
        from opticam_rt.export.tap import find_module

        self.model = model
        spec = TapSpec.parse(tap)
        self._module_path, self._call = spec.module_path, spec.call_index or 0
        self._tap_module = find_module(model, spec.module_path)
        self.register_buffer("visible", torch.from_numpy(~np.asarray(cells, dtype=bool)).float()[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        calls = [0]

        def wall(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            index = calls[0]
            calls[0] += 1
            if index != self._call:
                return None
            if not isinstance(output, torch.Tensor) or output.dim() != 4 or output.shape[2:] != self.visible.shape[2:]:
                raise InputError(f"the feature wall needs the tap {self._module_path!r} to output (N, K, "
                                 f"{self.visible.shape[2]}, {self.visible.shape[3]}); got "
                                 f"{tuple(getattr(output, 'shape', ()))}")
            return output * self.visible

        handle = self._tap_module.register_forward_hook(wall)
        try:
            return self.model(x)
        finally:
            handle.remove()


def feature_cells(region: Sequence[float], feature_size: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The feature-map cells of ``region`` (fractions) and the region they cover exactly, as
    fractions: the dead zone measured at image resolution is the hidden cells' own area."""
    cells = hidden_mask(region, feature_size)
    rows, cols = np.nonzero(cells)
    h, w = feature_size
    return cells, (cols.min() / w, rows.min() / h, (cols.max() + 1) / w, (rows.max() + 1) / h)


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


def hidden_l2(maps: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """The walls paper's measure: ||map on the hidden region||_2 / ||map||_2 per map, (N, H, W) -> (N,);
    NaN for an all-zero map."""
    maps = np.asarray(maps, dtype=np.float64)
    total = np.sqrt((maps**2).sum(axis=(1, 2)))
    inside = np.sqrt((maps[:, hidden] ** 2).sum(axis=1))
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
    #: ``input`` (pixels zeroed before the model) or ``features`` (the paper's: tap cells zeroed
    #: after the tap); see the module docstring.
    wall: str = "input"

    def __post_init__(self) -> None:
        if self.wall not in WALLS:
            raise InputError(f"wall {self.wall!r} is not one of {', '.join(WALLS)}")

    def key_settings(self) -> dict[str, Any]:
        """What the walled model depends on (the input wall's key is the one it always had)."""
        return {"region": list(self.region), **({"wall": self.wall} if self.wall != "input" else {})}


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
    model = sm.build()
    if settings.wall == "features":
        cells, dead = feature_cells(settings.region, _feature_size(model, sm))
        hidden = hidden_mask(dead, sm.input_size)
        walled: nn.Module = FeatureWalledModel(model, sm.tap, cells)
    else:
        hidden = hidden_mask(settings.region, sm.input_size)
        walled = WalledModel(model, hidden)
    area = float(hidden.mean())
    export_key = {"check": "wall", "model": model_fingerprint(model), **sm.settings(), **settings.key_settings()}
    directory = derived_dir(cache_dir(), sm, "wall", export_key)
    bundle = cached_export(walled, directory, export_key, sm, walled_tap(sm.tap), log=say)
    names = list(images)
    stack = np.stack([images[n] for n in names]).astype(np.float32)
    produced_by = bundle_hashes(bundle)
    out: dict[str, list[dict[str, Any]]] = {}
    todo = [*settings.methods, *([CONTROL] if settings.control else [])]
    with Explainer(bundle, backend=settings.backend) as explainer:
        top1 = explainer.predict(stack)[0].argmax(axis=1)
        for method in todo:
            options = method_options(method, settings.method_options) if method != CONTROL else {}
            # "measures": records written before hidden_l2 existed are not reused (they lack it).
            key = key_id(record_key("wall", produced_by, method, options, {**settings.key_settings(), "measures": 2}))
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
                mass, peak, l2 = hidden_mass(maps, hidden), hidden_peak(maps, hidden), hidden_l2(maps, hidden)
                new = [
                    {"key": key, "check": "wall", "method": method, "image": names[i], "target": int(targets[j]),
                     "hidden_mass": finite_or_none(mass[j]), "hidden_peak": int(peak[j]), "hidden_l2": finite_or_none(l2[j]),
                     "hidden_area": area}
                    for j, i in enumerate(pending)
                ]
                store.append(new)
                done.update({r["image"]: r for r in new})
            elif progress:
                progress(len(names))
            out[method] = [done[n] for n in names]
    return out


def summarise_wall(records: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """{method: {n_images, hidden_mass, hidden_peak, hidden_l2, hidden_area}}: means over images (None if no value)."""
    summary: dict[str, dict[str, float | None]] = {}
    for method, rows in records.items():
        entry: dict[str, float | None] = {"n_images": len(rows)}
        for column in ("hidden_mass", "hidden_peak", "hidden_l2", "hidden_area"):
            values = [r[column] for r in rows if r.get(column) is not None]
            entry[column] = float(np.mean(values)) if values else None
        summary[method] = entry
    return summary


def _feature_size(model: nn.Module, sm: "SanityModel") -> tuple[int, int]:  # noqa: F821
    """(h, w) of the tap's output for one input of the model's size."""
    from opticam_rt.export.tap import TapSpec as _Spec, resolve_tap

    example = torch.zeros(1, 3, *sm.input_size)
    _, shape = resolve_tap(model, _Spec.parse(sm.tap), example)
    return int(shape[2]), int(shape[3])
