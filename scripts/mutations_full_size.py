"""The verification mutation tests on a full-size bundle, where last-bit floors raise the limits.

Applies each mutation of tests/export/test_export_verify.py (a sign flipped, a kernel
transposed, a gradient term dropped) to one graph of an exported full-size bundle and verifies
that graph again; every mutation must FAIL even where near-ties lift the limit towards the cap.

    python scripts/mutations_full_size.py vgg11-bn /tmp/families/vgg11-bn grad_features,grad_image

The bundle must come from scripts/export_families.py (same family name, same random weights).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "export")]
    from arch_zoo import VARIANTS, calibrated
    from test_export_verify import MUTATIONS, mutated_copy

    from opticam_rt.bundle import load_bundle
    from opticam_rt.export import build_graphs, verify_bundle
    from opticam_rt.export.exporter import _real_images

    name, source, graph_names = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
    family = VARIANTS[name]
    model = calibrated(family.full, family.full_size)
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    graphs, _, _ = build_graphs(model, family.tap_for(model), family.full_size, *imagenet, family.token_tap)
    real = _real_images(family.full_size)
    bundle = load_bundle(source)
    for graph in graph_names:
        for mutation in MUTATIONS:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    copy = mutated_copy(bundle, graph, mutation, graph, Path(tmp) / "bundle")
                except IndexError:
                    print(f"{name} {graph} {mutation}: the graph has no node this mutation changes", flush=True)
                    continue
                start = time.perf_counter()
                check = verify_bundle(load_bundle(copy), graphs, real, names=[graph]).graphs[graph]
                print(f"{name} {graph} {mutation}: normwise error {check.norm_error:.2e}, limit {check.limit:.2e} "
                      f"(PyTorch float32 floor {check.norm_floor:.2e}) -> {'ok' if check.passed else 'FAIL'} "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
