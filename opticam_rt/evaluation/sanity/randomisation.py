"""Model-parameter randomisation (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018).

Layers are re-initialised from the top down, cumulatively: first the layers above the tap
(the classifier head), then the tap's own block, then the blocks below it. At every step the
randomised model is exported and the same images are explained for the same target classes
(the original model's top-1); each map is compared with the original model's map by Spearman
rank correlation and SSIM. A method whose maps barely change is not explaining the model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from opticam_rt.errors import InputError
from opticam_rt.evaluation.sanity.similarity import finite_or_none, spearman, ssim
from opticam_rt.export.tap import TapSpec, find_module

__all__ = ["CascadeStep", "RandomisationSettings", "cascade", "parse_cascade", "randomised", "run_randomisation"]


@dataclass(frozen=True)
class CascadeStep:
    """One step of the cascade: ``modules`` are the paths whose own parameters it re-initialises;
    ``label`` names the block (e.g. ``_blocks.15`` or ``_conv_head+_bn1``)."""

    label: str
    modules: tuple[str, ...]
    above_tap: bool


def _block_key(path: str) -> str:
    """The block a module belongs to: its path up to the first numeric part (``layer4.2.conv1`` -> ``layer4.2``)."""
    parts = path.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return path


def _starts_layer(module: nn.Module) -> bool:
    """A convolution or linear layer starts a new group; other parameterised modules (norms)
    join the layer before them."""
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear))


def _execution_order(model: nn.Module, tap: TapSpec, example: torch.Tensor) -> tuple[list[str], list[str]]:
    """Paths of modules with parameters of their own, in order of first call: (before or at the tap, after it)."""
    owners = {n: m for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))}
    order: list[str] = []
    tap_at = [-1]
    tap_calls = [0]
    handles = []
    for name, module in owners.items():
        handles.append(module.register_forward_hook(lambda m, a, o, name=name: order.append(name) if name not in order else None))
    tap_module = find_module(model, tap.module_path)

    def on_tap(m: nn.Module, a: Any, o: Any) -> None:
        if tap_calls[0] == (tap.call_index or 0):
            tap_at[0] = len(order)
        tap_calls[0] += 1

    handles.append(tap_module.register_forward_hook(on_tap))
    was_training = model.training
    model.eval()  # a training-mode forward would update BatchNorm statistics
    try:
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    if tap_at[0] < 0:
        raise InputError(f"tap {tap} did not run in the model's forward pass")
    return order[: tap_at[0]], order[tap_at[0] :]


def _group(paths: list[str], model: nn.Module, above: bool) -> list[CascadeStep]:
    modules = dict(model.named_modules())
    groups: list[tuple[list[str], list[str]]] = []  # (block keys, module paths)
    for path in paths:
        key = _block_key(path)
        if groups and (key in groups[-1][0] or not _starts_layer(modules[path])):
            if key not in groups[-1][0]:
                groups[-1][0].append(key)
            groups[-1][1].append(path)
        else:
            groups.append(([key], [path]))
    return [CascadeStep("+".join(keys), tuple(members), above) for keys, members in groups]


def cascade(model: nn.Module, tap: str, input_size: tuple[int, int]) -> list[CascadeStep]:
    """Every step of the full cascade, top down: the layers above the tap (last first), then the
    tap's own block and the blocks below it.

    A step is a block (module path up to its first numeric part, e.g. ``_blocks.15``) or, outside
    numbered blocks, one convolution or linear layer with the norm layers after it.
    """
    below, above = _execution_order(model, TapSpec.parse(tap), torch.rand(1, 3, *input_size))
    return [*reversed(_group(above, model, True)), *reversed(_group(below, model, False))]


def parse_cascade(text: str, model: nn.Module) -> list[CascadeStep]:
    """``'fc;head.0,head.1;layer4'``: steps separated by ';', module paths by ','. A path
    re-initialises every module with parameters under it."""
    modules = dict(model.named_modules())
    steps = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        members: list[str] = []
        for path in (p.strip() for p in part.split(",") if p.strip()):
            if path not in modules or not path:
                find_module(model, path)  # raises with the closest names
            members.extend(n for n, m in modules.items() if (n == path or n.startswith(path + "."))
                           and any(True for _ in m.parameters(recurse=False)))
        if not members:
            raise InputError(f"cascade step {part!r} holds no parameters")
        steps.append(CascadeStep("+".join(p.strip() for p in part.split(",") if p.strip()), tuple(members), False))
    if not steps:
        raise InputError(f"cascade {text!r} names no step")
    return steps


def _reinitialise(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()  # PyTorch's own initialisation (BatchNorm: running stats too)
        return
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.normal_(0.0, fan_in**-0.5)


def randomised(model: nn.Module, steps: Sequence[CascadeStep], seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with the modules of ``steps`` re-initialised (the original is untouched).

    Step i draws from seed (seed, i) alone, so a module gets the same random values in every
    later step of the cascade: step k+1 differs from step k only by step k+1's modules.
    """
    copied = copy.deepcopy(model)
    modules = dict(copied.named_modules())
    for index, step in enumerate(steps):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 100_003 + index)
            for path in step.modules:
                _reinitialise(modules[path])
    return copied.eval()


@dataclass
class RandomisationSettings:
    """``steps``: how many cascade steps (the first ones of the full cascade) unless ``cascade_text`` is
    given; ``method_options``: method -> its options (declared defaults otherwise)."""

    methods: Sequence[str]
    steps: int = 4
    cascade_text: str | None = None
    seed: int = 0
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 8
    backend: str = "auto"


def run_randomisation(
    sm: "SanityModel",  # noqa: F821
    images: Mapping[str, np.ndarray],
    settings: RandomisationSettings,
    store: "SanityRecords",  # noqa: F821
    log: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[CascadeStep], dict[str, list[dict[str, Any]]]]:
    """Run the cascade on ``images`` (name -> (3, H, W) in [0, 1]).

    Records per (method, image, step >= 1): ``randomised`` (the step's label), ``spearman``
    and ``ssim`` of the step's map against the original model's map (None where undefined).
    Steps whose records are all in ``store`` under the same key are neither exported nor run
    again. Returns (the cascade, {method: records}).
    """
    from opticam_rt.cache import builtin_bundle, cache_dir
    from opticam_rt.evaluation.sanity.explain import explain_maps, method_options
    from opticam_rt.evaluation.sanity.models import bundle_hashes, cached_export, derived_dir, model_fingerprint
    from opticam_rt.evaluation.sanity.records import key_id, record_key
    from opticam_rt.runtime.explainer import Explainer

    say = log or (lambda m: None)
    model = sm.build()
    if settings.cascade_text:
        steps = parse_cascade(settings.cascade_text, model)
    else:
        steps = cascade(model, sm.tap, sm.input_size)[: settings.steps]
    if not steps:
        raise InputError("the cascade has no step: the model has no parameters to re-initialise")
    fingerprint = model_fingerprint(model)
    if sm.builtin:
        original = builtin_bundle(sm.spec, log=say)
    else:
        okey = {"check": "original", "model": fingerprint, **sm.settings()}
        original = cached_export(model, derived_dir(cache_dir(), sm, "original", okey), okey, sm, sm.tap, log=say)
    names = list(images)
    stack = np.stack([images[n] for n in names]).astype(np.float32)

    def step_settings(k: int) -> dict[str, Any]:
        return {"model": fingerprint, "seed": settings.seed, "cascade": [list(s.modules) for s in steps[:k]]}

    keys = {
        (m, k): key_id(record_key("randomisation", bundle_hashes(original), m, method_options(m, settings.method_options),
                                  step_settings(k)))
        for m in settings.methods for k in range(1, len(steps) + 1)
    }
    done = {mk: {r["image"]: r for r in store.for_key(key)} for mk, key in keys.items()}

    def pending(method: str, k: int) -> list[int]:
        return [i for i, n in enumerate(names) if n not in done[(method, k)]]

    busy = [m for m in settings.methods if any(pending(m, k) for k in range(1, len(steps) + 1))]
    reference: dict[str, np.ndarray] = {}
    with Explainer(original, backend=settings.backend) as explainer:
        targets = explainer.predict(stack)[0].argmax(axis=1)
        for method in busy:
            say(f"{method}: original model")
            reference[method], _ = explain_maps(explainer, stack, method, method_options(method, settings.method_options),
                                                targets, settings.batch_size)
    for k in range(1, len(steps) + 1):
        todo = [m for m in busy if pending(m, k)]
        if progress:
            progress(len(names) * (len(settings.methods) - len(todo)))
        if not todo:
            continue
        export_key = {"check": "randomisation", "step": k, **sm.settings(), **step_settings(k)}
        directory = derived_dir(cache_dir(), sm, f"random{k}", export_key)
        bundle = cached_export(randomised(model, steps[:k], settings.seed), directory, export_key, sm, sm.tap, log=say)
        with Explainer(bundle, backend=settings.backend) as explainer:
            for method in todo:
                rows = pending(method, k)
                say(f"{method}: step {k} ({steps[k - 1].label} re-initialised), {len(rows)} image(s)")
                maps, _ = explain_maps(explainer, stack[rows], method, method_options(method, settings.method_options),
                                       targets[rows], settings.batch_size)
                new = [
                    {"key": keys[(method, k)], "check": "randomisation", "method": method, "image": names[i],
                     "step": k, "randomised": steps[k - 1].label, "target": int(targets[i]),
                     "spearman": finite_or_none(spearman(reference[method][i], maps[j])),
                     "ssim": finite_or_none(ssim(reference[method][i], maps[j]))}
                    for j, i in enumerate(rows)
                ]
                store.append(new)
                done[(method, k)].update({r["image"]: r for r in new})
                if progress:
                    progress(len(names))
    out = {m: [done[(m, k)][n] for k in range(1, len(steps) + 1) for n in names] for m in settings.methods}
    return steps, out


def summarise_randomisation(steps: Sequence[CascadeStep], records: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """{method: {"n_images", "steps": [{"step", "randomised", "spearman", "ssim"}]}}: means over images."""
    summary: dict[str, Any] = {}
    for method, rows in records.items():
        per_step = []
        for k, step in enumerate(steps, start=1):
            at = [r for r in rows if r["step"] == k]
            entry: dict[str, Any] = {"step": k, "randomised": step.label}
            for column in ("spearman", "ssim"):
                values = [r[column] for r in at if r.get(column) is not None]
                entry[column] = float(np.mean(values)) if values else None
            per_step.append(entry)
        summary[method] = {"n_images": len({r["image"] for r in rows}), "steps": per_step}
    return summary
