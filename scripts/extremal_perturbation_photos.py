"""Extremal Perturbation on real photos: host loop (ONNX Runtime) vs the PyTorch reference, and
its cost per image against Opti-CAM's.

    PYTHONPATH=$PWD python scripts/extremal_perturbation_photos.py --bundle ~/.cache/opticam-rt/efficientnet-lite0 \
        [--photos 2] [--iterations 800] [--no-reference]

Prints, per photo, the Pearson r of the two maps and the seconds each took, and Opti-CAM's
seconds (100 Adam steps) on the same photo and backend.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--photos", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=800)
    ap.add_argument("--backend", default="ort-cpu")
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args()

    import torch

    from opticam_rt.images import sample_photos, to_model_input
    from opticam_rt.runtime.explainer import Explainer

    torch.set_num_threads(2)
    with Explainer(args.bundle, backend=args.backend) as ex:
        size = ex.input_size
        photos = dict(list(sample_photos().items())[: args.photos])
        for name, photo in photos.items():
            x = to_model_input(photo, size)[None]
            t = time.perf_counter()
            ep = ex.explain(x, method="extremal-perturbation", iterations=args.iterations)
            t_ep = time.perf_counter() - t
            t = time.perf_counter()
            ex.explain(x, method="opti-cam")
            t_opti = time.perf_counter() - t
            line = f"{name}: EP {t_ep:.1f} s ({args.iterations} steps), Opti-CAM {t_opti:.1f} s, class {int(ep.targets[0])}"
            if not args.no_reference:
                with Explainer(args.bundle, backend="torch") as ref_ex:
                    t = time.perf_counter()
                    ref = ref_ex.explain(x, method="extremal-perturbation", iterations=args.iterations, targets=ep.targets)
                    t_ref = time.perf_counter() - t
                r = np.corrcoef(ep.maps[0].ravel(), ref.maps[0].ravel())[0, 1]
                line += f"; reference {t_ref:.1f} s, r = {r:.4f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
