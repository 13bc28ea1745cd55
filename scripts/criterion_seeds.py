"""Verification's criterion across seeds: no false FAIL on the tiny architecture matrix.

For each family of tests/arch_zoo.py (tiny widths, as in CI) and each seed: the model is
built and calibrated under that seed, exported (unverified), then verified with that seed's
random images, cotangents and Opti-CAM weights and a seed-dependent choice of three of the
sample photos. Every graph is correct, so every check should pass; the output is one line per
(family, seed, graph): the normwise error, the limit it was read against and PyTorch float32's
own error, and a summary with the smallest margin (limit / error) seen. Wrong backward rules
failing is checked by the mutation tests (tests/export/test_export_verify.py).

    python scripts/criterion_seeds.py --seeds 3 [resnet vgg-bn ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from arch_zoo import FAMILIES, calibrated

    from opticam_rt.export import export_bundle
    from opticam_rt.export.exporter import build_graphs
    from opticam_rt.export.verify import verify_bundle
    from opticam_rt.images import sample_photos, to_model_input

    photos = list(sample_photos().values())
    out = Path(tempfile.mkdtemp(prefix="criterion-"))
    failures, margins = [], []
    for name in args.families or list(FAMILIES):
        family = FAMILIES[name]
        for seed in range(args.seeds):
            model = calibrated(family.tiny, family.tiny_size, seed=seed)
            tap = family.tap_for(model)
            bundle, _ = export_bundle(
                model, out / f"{name}-{seed}", tap=tap, input_size=family.tiny_size, mean=MEAN, std=STD,
                verify=False, explainers=False, token_reshape=family.token_tap, force=True,
            )  # fmt: skip
            graphs, _, _ = build_graphs(model, tap, family.tiny_size, MEAN, STD, token_reshape=family.token_tap)
            chosen = [photos[(seed + i) % len(photos)] for i in range(3)]
            real = np.stack([to_model_input(p, family.tiny_size) for p in chosen])
            report = verify_bundle(bundle, graphs, real, seed=seed)
            for graph, check in report.graphs.items():
                margin = check.limit / max(check.norm_error, 1e-300)
                margins.append((margin, name, seed, graph))
                print(f"{name:13s} seed {seed} {graph:14s} normwise {check.norm_error:.2e} limit {check.limit:.1e} "
                      f"torch-f32 {check.norm_floor:.2e} {'ok' if check.passed else 'FAIL'}", flush=True)  # fmt: skip
                if not check.passed:
                    failures.append(f"{name} seed {seed} {graph}")
    worst = min(margins)
    print(f"\n{len(margins)} checks, {len(failures)} FAIL{': ' + ', '.join(failures) if failures else ''}; "
          f"smallest margin limit/error {worst[0]:.1f} ({worst[1]} seed {worst[2]} {worst[3]})")  # fmt: skip


if __name__ == "__main__":
    main()
