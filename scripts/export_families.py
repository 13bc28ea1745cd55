"""Export the full-size architecture families (tests/arch_zoo.py) one at a time and measure them.

For each family: export seconds (tracing and ONNX export of the graphs), verification seconds
and figures (per graph: normwise error against PyTorch float64 and its limit), peak resident
memory of the export process, bundle size on disk, and Grad-CAM / Opti-CAM seconds per image on
ONNX Runtime CPU. Each family runs in its own process, so the peak memory is that export's alone,
and families never run concurrently. Results are printed as one JSON line per family and a
Markdown table (docs/models.md).

    python scripts/export_families.py resnet vgg-bn --out /tmp/families [--iterations 100]
    python scripts/export_families.py timm:levit_128s timm:swin_tiny_patch4_window7_224

A name ``timm:MODEL`` builds timm's ``MODEL`` (``pretrained=False``: random weights, never
downloaded; BatchNorm calibrated as tests/arch_zoo.py's ``calibrated`` does) at its default
input size, mean and std (its ``pretrained_cfg``: Inception-v3 at 299), tapped by ``--layer
auto`` or, where auto's pick is not the map a CAM reads, by ``TIMM_TAPS``. timm is not a
dependency of the project: ``pip install opticam-rt[timm]`` in a separate environment
(docs/models.md).

Timings are only comparable on an idle machine; the output records the load average before and
after each family, so a contended run can be recognised.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: timm model -> (tap, token tap), where ``--layer auto`` does not pick the map a CAM reads.
#: LeViT normalises its tokens with BatchNorm1d (no LayerNorm blocks for auto's transformer
#: rule), so auto would take the stem's 14 x 14 convolution map; its last stage's tokens are
#: the 4 x 4 grid the classifier pools.
TIMM_TAPS: dict[str, tuple[str, bool]] = {
    "levit_128s": ("stages", True),
    "levit_128": ("stages", True),
    "levit_192": ("stages", True),
    "levit_256": ("stages", True),
    # CoaT's convolutional position encodings output 4-D (N, heads, tokens, dims) tensors after
    # the last block, which auto reads as a map; the classifier reads the class token only, so
    # the patch tokens reach it through the last block's attention: tap that block's first
    # LayerNorm (where the Opti-CAM paper taps ViT).
    "coat_lite_tiny": ("serial_blocks4.1.norm1", True),
}


#: what an all-zero BatchNorm scale of a timm model becomes (``--branch-scale``): 1 as in a
#: trained network; smaller values keep the residual branches live but damped
BRANCH_SCALE = 1.0


@dataclass(frozen=True)
class TimmFamily:
    """A timm model as the script measures it: builder, tap (``TIMM_TAPS`` or ``"auto"``),
    input size (H, W) and preprocessing from its ``pretrained_cfg``."""

    name: str
    model: str
    tap: str
    token_tap: bool
    full_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def full(self):  # noqa: ANN201 - an nn.Module
        import timm
        import torch

        model = timm.create_model(self.model, pretrained=False)
        # Some timm inits zero a layer: MLP-Mixer's classifier (every gradient would be 0, and
        # verification and Grad-CAM would compare zeros), ResNet's last BatchNorm scale in each
        # block (zero_init_last: every residual branch would be dead). Such a Linear gets random
        # weights, such a BatchNorm scale ones, as a trained network has neither.
        with torch.no_grad():
            for module in model.modules():
                weight = getattr(module, "weight", None)
                if not isinstance(weight, torch.Tensor) or weight.any():
                    continue
                if isinstance(module, torch.nn.Linear):
                    weight.normal_(std=0.02)
                elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    weight.fill_(BRANCH_SCALE)
        return model

    def tap_for(self, model) -> str:  # noqa: ANN001
        return self.tap


def timm_family(name: str) -> TimmFamily:
    """``timm:MODEL`` -> its TimmFamily. Raises SystemExit with what to install when timm is missing."""
    model = name.split(":", 1)[1]
    try:
        import timm
    except (ImportError, RuntimeError) as exc:  # RuntimeError: a torchvision built for another torch
        raise SystemExit(
            f"{name}: timm is not importable here ({exc}). It is a test-only extra: make a separate "
            "environment with `pip install opticam-rt[timm]` (docs/models.md)"
        ) from exc
    if model not in timm.list_models():
        close = ", ".join(timm.list_models(f"*{model.split('_')[0]}*")[:8])
        raise SystemExit(f"{name}: timm has no model {model!r}" + (f"; similar: {close}" if close else ""))
    cfg = timm.get_pretrained_cfg(model)
    size = tuple(cfg.input_size[1:]) if cfg is not None else (224, 224)
    mean = tuple(cfg.mean) if cfg is not None else (0.485, 0.456, 0.406)
    std = tuple(cfg.std) if cfg is not None else (0.229, 0.224, 0.225)
    tap, token = TIMM_TAPS.get(model, ("auto", False))
    return TimmFamily(name, model, tap, token, size, mean, std)  # type: ignore[arg-type]


def _rss_gb() -> float:
    """This process's resident memory now, in GB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def gradcam_parity(model, bundle, images: np.ndarray, targets: np.ndarray, maps: np.ndarray) -> dict:  # noqa: ANN001
    """Pearson r and largest difference between the bundle's Grad-CAM ``maps`` (N, H, W) and a
    Grad-CAM computed here with PyTorch autograd in float64 on the tap's own output.

    Written apart from the exporter's graph code: the tap call's raw output is hooked, a token
    output (N, T, D) has its first ``prefix`` tokens dropped and the rest laid out row-major on
    the grid, a channels-last (N, h, w, C) one is read as it is; then relu(sum_c mean_hw(dy/dA) A),
    bilinear upsampling and per-image min-max, as Grad-CAM is defined.

    images: (N, 3, H, W) pixels in [0, 1]; targets: (N,) class indices.
    """
    import torch
    import torch.nn.functional as F

    from opticam_rt.constants import NORM_EPS

    manifest = bundle.manifest
    path, _, call = manifest.tap_layer.partition("@")
    net = copy.deepcopy(model).double().eval()
    module = net.get_submodule(path)
    seen: list = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out))
    x = torch.from_numpy(images).double()
    mean = torch.tensor(manifest.mean, dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor(manifest.std, dtype=torch.float64).reshape(1, 3, 1, 1)
    try:
        logits = net((x - mean) / std)
    finally:
        handle.remove()
    raw = seen[int(call or 0)]
    (grad,) = torch.autograd.grad(logits[torch.arange(len(targets)), torch.from_numpy(targets)].sum(), raw)
    k, h, w = manifest.tap_shape
    if manifest.tap_tokens is not None:  # (N, T, D) -> (N, h, w, D)
        prefix = manifest.tap_tokens["prefix"]
        raw, grad = (t[:, prefix:].reshape(len(images), h, w, k) for t in (raw, grad))
    elif manifest.tap_layout != "channels-last":  # (N, K, h, w) -> (N, h, w, K)
        raw, grad = (t.permute(0, 2, 3, 1) for t in (raw, grad))
    cam = torch.relu((grad.mean(dim=(1, 2), keepdim=True) * raw).sum(dim=3))  # (N, h, w)
    up = F.interpolate(cam[:, None], size=images.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
    expected = ((up - lo) / (hi - lo + NORM_EPS)).detach().numpy()
    return {
        "gradcam_r": float(np.corrcoef(maps.ravel(), expected.ravel())[0, 1]),
        "gradcam_max_diff": float(np.abs(maps - expected).max()),
        "gradcam_grid": [h, w],
    }


def measure(name: str, out: Path, iterations: int, seed: int = 0) -> dict:
    """Export, verify and explain one family in this process. Each phase is also appended, as it
    happens, to ``out`` + ``.log`` (so a long export can be watched)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from arch_zoo import VARIANTS, calibrated

    from opticam_rt.export import export_bundle
    from opticam_rt.images import sample_photos, to_model_input
    from opticam_rt.runtime import Explainer

    family = timm_family(name) if name.startswith("timm:") else VARIANTS[name]
    mean = getattr(family, "mean", (0.485, 0.456, 0.406))
    std = getattr(family, "std", (0.229, 0.224, 0.225))
    load_before = os.getloadavg()[0]
    model = calibrated(family.full, family.full_size, seed=seed)  # the seed of the random weights
    params = sum(p.numel() for p in model.parameters())
    marks: list[tuple[float, str]] = []
    phases: list[str] = []  # peak resident memory so far at each step: where the peak is reached
    start = time.perf_counter()

    def log(message: str) -> None:
        marks.append((time.perf_counter() - start, message))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        phases.append(f"{marks[-1][0]:.0f}s peak {peak:.2f} GB rss {_rss_gb():.2f} GB: {message[:60]}")
        with open(f"{out}.log", "a") as progress:
            progress.write(f"{marks[-1][0]:.0f}s peak {peak:.2f} GB load {os.getloadavg()[0]:.1f}: {message}\n")

    bundle, report = export_bundle(
        model, out, tap=family.tap_for(model), input_size=family.full_size,
        mean=mean, std=std, model_name=name, force=True,
        token_reshape=family.token_tap, log=log,
    )  # fmt: skip
    total = time.perf_counter() - start
    exported = max(t for t, m in marks if m.startswith("weights:"))
    shipped = list(sample_photos().values())[:3]
    if not shipped:
        raise SystemExit("no sample photos: install scikit-image (its bundled photos are the real images)")
    photos = np.stack([to_model_input(p, family.full_size) for p in shipped])
    with Explainer(bundle, backend="ort-cpu") as explainer:
        result = explainer.explain(photos, method="grad-cam")
    parity = gradcam_parity(model, bundle, photos, np.asarray(result.targets), np.asarray(result.maps))
    log(f"Grad-CAM against PyTorch float64 on the tap's output: r {parity['gradcam_r']:.9f}")
    del model
    image = photos[:1]
    with Explainer(bundle, backend="ort-cpu") as explainer:
        explainer.explain(image, method="grad-cam")  # sessions created outside the timing
        t0 = time.perf_counter()
        explainer.explain(image, method="grad-cam")
        gradcam = time.perf_counter() - t0
        t0 = time.perf_counter()
        explainer.explain(image, method="opti-cam", iterations=iterations)
        opticam = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    return {
        "family": name,
        "seed": seed,
        "branch_scale": BRANCH_SCALE,
        "torch": __import__("torch").__version__,
        "parameters": params,
        "tap": bundle.manifest.tap_layer,
        "tap_shape": list(bundle.manifest.tap_shape),
        "export_s": round(exported, 1),
        "verify_s": round(total - exported, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "bundle_mb": round(size / 1e6, 1),
        "verified": bool(report),
        "norm_errors": {g: float(f"{c.norm_error:.2e}") for g, c in report.graphs.items()},
        "limits": {g: float(f"{c.limit:.2e}") for g, c in report.graphs.items()},
        "settled_by": {g: c.settled_by for g, c in report.graphs.items()},
        "float64_graph_norm_errors": {g: c.float64_error for g, c in report.graphs.items() if c.float64_error is not None},
        "torch_float32_norm_errors": {g: float(f"{c.norm_floor:.2e}") for g, c in report.graphs.items()},
        "max_relative_errors": {g: float(f"{c.max_error:.2e}") for g, c in report.graphs.items()},
        **parity,
        "gradcam_s": round(gradcam, 3),
        "opticam_s": round(opticam, 2),
        "opticam_iterations": iterations,
        "phases": phases,
        "load_before": round(load_before, 1),
        "load_after": round(os.getloadavg()[0], 1),
    }


def print_table(rows: list[dict]) -> None:
    """The Markdown table of docs/models.md, from the JSON rows."""
    print("| family | params | tap | export s | verify s | peak GB | bundle MB | verified (worst normwise error) "
          "| Grad-CAM vs PyTorch float64 (r, max diff) | Grad-CAM s | Opti-CAM s | load before/after |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['family']} (seed {r.get('seed', 0)}) | | | | | | | **error**: {r['error']} | | | | |")
            continue
        worst_graph = max(r["norm_errors"], key=lambda g: r["norm_errors"][g] / r["limits"][g])
        worst = f"{r['norm_errors'][worst_graph]:.1e} {worst_graph}, limit {r['limits'][worst_graph]:.1e}"
        if worst_graph in r.get("float64_graph_norm_errors", {}):  # above its limit: the float64 graph decided
            worst += f"; the graph in float64 {r['float64_graph_norm_errors'][worst_graph]:.1e}"
        print(
            f"| {r['family']} (seed {r.get('seed', 0)}) | {r['parameters'] / 1e6:.1f} M | `{r['tap']}` {tuple(r['tap_shape'])} | {r['export_s']} "
            f"| {r['verify_s']} | {r['peak_rss_gb']} | {r['bundle_mb']} | {'yes' if r['verified'] else 'NO'} ({worst}) "
            f"| {r['gradcam_r']:.9f}, {r['gradcam_max_diff']:.1e} | {r['gradcam_s']} | {r['opticam_s']} ({r['opticam_iterations']} it.) | {r['load_before']} / {r['load_after']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*")
    parser.add_argument("--table", type=Path, nargs="+", default=None,
                        help="print the table of earlier runs' JSON lines (files of this script's output) and stop")
    parser.add_argument("--out", type=Path, default=None, help="where bundles go (default: a temporary folder)")
    parser.add_argument("--iterations", type=int, default=100, help="Opti-CAM iterations per image")
    parser.add_argument(
        "--max-gb", type=float, default=10.0,
        help="data-segment limit of each family's process: a runaway export fails with MemoryError instead of "
        "taking the machine's memory (the full-size ViT reached 24 GB and was OOM-killed)",
    )  # fmt: skip
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0],
        help="seeds of the random weights (and BatchNorm calibration); each family runs once per seed",
    )  # fmt: skip
    parser.add_argument(
        "--branch-scale", type=float, default=1.0,
        help="timm models: the value an all-zero BatchNorm scale (a residual branch timm starts dead) gets",
    )  # fmt: skip
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global BRANCH_SCALE
    BRANCH_SCALE = args.branch_scale
    if args.table:
        print_table([json.loads(line) for f in args.table for line in f.read_text().splitlines() if line.startswith("{")])
        return
    if not args.families:
        parser.error("name at least one family")
    out = args.out or Path(tempfile.mkdtemp(prefix="families-"))
    if args.one:
        limit = int(args.max_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        folder = out / f"{args.families[0].replace(':', '-')}-seed{args.seeds[0]}"
        print(json.dumps(measure(args.families[0], folder, args.iterations, args.seeds[0])), flush=True)
        return
    rows = []
    for name, seed in [(n, s) for n in args.families for s in args.seeds]:  # one process each, one after the other
        command = [sys.executable, __file__, name, "--one", "--out", str(out), "--iterations", str(args.iterations),
                   "--max-gb", str(args.max_gb), "--seeds", str(seed), "--branch-scale", str(args.branch_scale)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or [f"(no output; exit status {done.returncode})"])[-1]
            rows.append({"family": name, "seed": seed, "error": tail})
            print(json.dumps(rows[-1]), flush=True)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print()
    print_table(rows)

if __name__ == "__main__":
    main()
