"""How OpenVINO's bf16 inference precision changes the maps, against f32, on the sample photos.

Usage: python scripts/ov_precision_effect.py BUNDLE [--iterations 100]
Prints per method the per-image Pearson correlation of bf16 maps with f32 maps, the max
absolute map difference, and the relative change of the target score on the masked image.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from opticam_rt.bundle import load_bundle
    from opticam_rt.images import sample_photos, to_model_input
    from opticam_rt.runtime import Explainer
    from opticam_rt.runtime.openvino_runner import OvRunner

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--methods", default="grad-cam,layer-cam,opti-cam")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    photos = sample_photos()
    images = np.stack([to_model_input(p, tuple(bundle.manifest.input_size)) for p in photos.values()])
    runs = {}
    for precision in ("f32", "bf16"):
        with Explainer(bundle, backend=OvRunner(bundle, precision=precision)) as explainer:
            for method in args.methods.split(","):
                options = {"iterations": args.iterations} if method == "opti-cam" else {}
                runs[precision, method] = explainer.explain(images, method, **options)
    print(f"{len(images)} photos ({', '.join(photos)}); bf16 against f32")
    for method in args.methods.split(","):
        a, b = runs["f32", method], runs["bf16", method]
        corr = [np.corrcoef(x.ravel(), y.ravel())[0, 1] for x, y in zip(a.maps, b.maps)]
        same_target = (a.targets == b.targets).mean()
        masked = np.abs(b.masked_scores - a.masked_scores) / np.maximum(a.masked_scores, 1e-12)
        print(f"  {method:<10} map r min {min(corr):.4f} mean {np.mean(corr):.4f}; max |diff| "
              f"{np.abs(a.maps - b.maps).max():.3f}; same target {same_target:.0%}; masked score rel. change "
              f"median {np.median(masked):.3f} max {masked.max():.3f}")


if __name__ == "__main__":
    main()
