"""Latency measurements against the PyTorch reference, and the ratio-based regression gate."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from opticam_rt.errors import InputError, OpticamError

#: Pseudo-methods timing the bare network in each runtime: the floor an explainer is judged by.
FLOORS = ("floor-forward", "floor-grad")
#: A floor sample is the mean of this many back-to-back calls. A lone call right after the other
#: runtime ran is measured cold (thread pools asleep, caches full of the other's weights):
#: EfficientNet-Lite0's ORT floor-grad read 28.8 ms as single calls against 23.5 ms per step
#: inside the Opti-CAM loop, which made the loop look cheaper than the network (overhead 0.81).
FLOOR_BURST = 10


@dataclass
class BenchRow:
    """Median seconds of one (method, backend, batch); ratio_vs_torch = torch median / this median
    (above 1: faster than the PyTorch reference), measured interleaved in the same run. For the
    floors, seconds per call in a burst of FLOOR_BURST calls (steady state, as inside a loop)."""

    method: str
    backend: str
    batch: int
    median_s: float
    runs: int
    ratio_vs_torch: float | None = None
    per_iteration_s: float | None = None
    loop_overhead: float | None = None


def floor_fn(explainer: Any, method: str) -> Callable[[np.ndarray], Any]:
    """The bare network's forward, or forward + image gradient, on the explainer's runner (the
    same graphs on every backend, PyTorch included).

    -> a function of images (N, 3, H, W) in [0, 1]; ``method`` is one of FLOORS.
    """
    runner = explainer.runner

    def floor(images: np.ndarray) -> Any:
        if method == "floor-forward":
            return runner.infer("forward", {"image": images})
        cot = np.zeros((len(images), explainer.bundle.manifest.num_classes), dtype=np.float32)
        cot[:, 0] = 1
        return runner.infer("grad_image", {"image": images, "cotangent": cot})

    return floor


def run_benchmarks(
    bundle: str | Path,
    methods: Sequence[str],
    backends: Sequence[str],
    batches: Sequence[int],
    images: np.ndarray,
    repeat: int = 3,
    method_options: dict[str, dict[str, Any]] | None = None,
    model: str | None = None,
    trust_code: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[BenchRow]:
    """Time every (method, backend, batch); backends interleaved inside each repeat.

    images (M, 3, H, W) in [0, 1]; a batch of n uses the first n (cycled when M < n).
    ``method_options``: method -> its options (declared defaults otherwise). The ``torch``
    reference is measured when it can be loaded, so ratios exist: ``model`` names its PyTorch
    model; without it, the manifest's is used only when built in or when ``trust_code`` (or
    OPTICAM_RT_TRUST_BUNDLE_CODE=1) lets the bundle's code be imported; otherwise the torch
    column is left out and ``log`` says why. ``auto`` resolves per
    method as ``explain`` resolves it (``runners.resolve_backend``); the floors run on every
    backend some method resolved to, so each method's loop overhead has its floor.
    """
    from opticam_rt.runtime.explainer import Explainer, method_class

    plan = backend_plan(methods, backends)
    backends = list(dict.fromkeys(b for chosen in plan.values() for b in chosen))
    names = list(dict.fromkeys([*backends, "torch"]))
    explainers: dict[str, Explainer] = {}
    for name in names:
        try:
            explainers[name] = Explainer(bundle, backend=name, model=model, trust_code=trust_code)
        except OpticamError as exc:
            if name in backends:
                raise
            if log:
                log(f"no PyTorch reference ({exc}); ratios are left out")
    samples: dict[tuple[str, str, int], list[float]] = {}
    for method in methods:
        for n in batches:
            batch = np.ascontiguousarray(np.resize(images, (n, *images.shape[1:])), dtype=np.float32)
            options = (method_options or {}).get(method, {})
            cheap = {} if method in FLOORS else {**options, **method_class(method).cheap_options}
            calls = FLOOR_BURST if method in FLOORS else 1
            timed = {name: e for name, e in explainers.items() if name in plan[method] or name == "torch"}
            for name, explainer in timed.items():  # warm-up: sessions, compiled models, caches
                _run(explainer, method, batch, cheap)
            for r in range(repeat):
                for name, explainer in timed.items():
                    start = time.perf_counter()
                    for _ in range(calls):
                        _run(explainer, method, batch, options)
                    samples.setdefault((method, name, n), []).append((time.perf_counter() - start) / calls)
                if log:
                    log(f"{method} b{n} repeat {r + 1}/{repeat}: " + ", ".join(
                        f"{name} {samples[(method, name, n)][-1]:.3f} s" for name in timed))
    for e in explainers.values():
        e.close()
    rows = []
    for (method, name, n), times in samples.items():
        rows.append(BenchRow(method, name, n, statistics.median(times), len(times)))
    by_key = {(r.method, r.backend, r.batch): r for r in rows}
    for r in rows:
        ref = by_key.get((r.method, "torch", r.batch))
        if ref is not None:
            r.ratio_vs_torch = ref.median_s / r.median_s
        iterations = _iterations(r.method, (method_options or {}).get(r.method, {}))
        if iterations:
            r.per_iteration_s = r.median_s / iterations
            floor = by_key.get(("floor-grad", r.backend, r.batch))
            if floor is not None:
                r.loop_overhead = r.per_iteration_s / floor.median_s
    return rows


def backend_plan(methods: Sequence[str], backends: Sequence[str]) -> dict[str, list[str]]:
    """method -> the backends it is timed on, ``auto`` resolved for that method; floors get every
    backend a method resolved to (or ``auto`` for the bare network when only floors are asked)."""
    from opticam_rt.runtime.runners import resolve_backend

    plan = {
        m: list(dict.fromkeys(resolve_backend(b, m) for b in backends)) for m in methods if m not in FLOORS
    }
    floors = list(dict.fromkeys(b for chosen in plan.values() for b in chosen)) or [
        resolve_backend(b) for b in backends
    ]
    plan.update({m: floors for m in methods if m in FLOORS})
    return plan


def _iterations(method: str, options: dict[str, Any]) -> int | None:
    """Steps per explanation of an optimising method (one that declares ``iterations``), else None."""
    if method in FLOORS:
        return None
    from opticam_rt.runtime.explainer import method_class

    declared = method_class(method).Options
    return declared.parse(options, method).iterations if "iterations" in declared.names() else None  # type: ignore[attr-defined]


def _run(explainer: Any, method: str, batch: np.ndarray, options: dict[str, Any]) -> None:
    if method in FLOORS:
        floor_fn(explainer, method)(batch)
    else:
        explainer.explain(batch, method=method, **options)


def format_rows(rows: Sequence[BenchRow]) -> str:
    header = f"{'method':<14} {'backend':<9} {'batch':>5} {'median s':>10} {'x vs torch':>10} {'s/iter':>9} {'overhead':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        def fmt(v: float | None, spec: str) -> str:
            return format(v, spec) if v is not None else "-"

        lines.append(
            f"{r.method:<14} {r.backend:<9} {r.batch:>5} {r.median_s:>10.4f} {fmt(r.ratio_vs_torch, '>10.2f')} "
            f"{fmt(r.per_iteration_s, '>9.4f')} {fmt(r.loop_overhead, '>9.2f')}"
        )
    lines.append("")
    lines.append("x vs torch: how many times faster than PyTorch eager on the same model, batch and photos "
                 "(its median / this median, measured interleaved in this run; > 1 = faster, - = no torch column)")
    lines.append("s/iter: Opti-CAM seconds per optimisation step; overhead: s/iter / floor-grad "
                 "(one forward + image gradient, the least a step can cost)")
    return "\n".join(lines)


@dataclass
class Regression:
    method: str
    backend: str
    batch: int
    baseline_ratio: float
    ratio: float

    @property
    def change(self) -> float:
        return self.ratio / self.baseline_ratio - 1


def compare_to_baseline(rows: Sequence[BenchRow], baseline: Sequence[dict], threshold: float) -> list[Regression]:
    """Rows whose ratio to PyTorch fell by more than ``threshold`` (0.15 = 15%) from the baseline.

    Ratios, never absolute times, are compared: both sides of a ratio were measured on the
    same machine in the same run, so a slower CI machine does not trip the gate.
    """
    if not 0 < threshold < 1:
        raise InputError(f"threshold must be between 0 and 1, got {threshold}")
    base = {(b["method"], b["backend"], int(b["batch"])): b.get("ratio_vs_torch") for b in baseline}
    found = []
    for r in rows:
        old = base.get((r.method, r.backend, r.batch))
        if old and r.ratio_vs_torch is not None and r.backend != "torch" and r.ratio_vs_torch < old * (1 - threshold):
            found.append(Regression(r.method, r.backend, r.batch, old, r.ratio_vs_torch))
    return found


def load_baseline(path: str | Path) -> list[dict]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the benchmark baseline ({exc})") from exc
    if not isinstance(data, list) or not all(isinstance(d, dict) and "ratio_vs_torch" in d for d in data):
        raise InputError(f"{path}: not a baseline written by `opticam-rt bench --save-baseline`")
    return data


def rows_to_json(rows: Sequence[BenchRow]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)
