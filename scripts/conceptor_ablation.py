"""Does Conceptor-CAM improve each base method? AD/AI/AG of every base and its conceptor wrapper.

On the built-in EfficientNet-Lite0 bundle and scikit-image's bundled photos (extended set: 7),
explaining the top-1 class, for both combinations (positive AND NOT pseudo-negative; positive
only). The wrapper is applied to each base's own maps with the same code the registered
``conceptor-*`` methods run (``methods.conceptor.refine``), so every base is measured without
registering a wrapper for each.

    python scripts/conceptor_ablation.py [--json out.json] [--opti-iterations 100]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from opticam_rt.cache import builtin_bundle
from opticam_rt.evaluation.classification import classification_metrics
from opticam_rt.images import sample_photos, to_model_input
from opticam_rt.methods.cam_family import class_map_to_saliency
from opticam_rt.methods.conceptor import refine
from opticam_rt.runtime import Explainer

BASES = ("grad-cam", "grad-cam++", "xgrad-cam", "layer-cam", "hires-cam", "score-cam", "opti-cam")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--opti-iterations", type=int, default=100)
    parser.add_argument("--aperture", type=float, default=1.0)
    args = parser.parse_args()
    bundle = builtin_bundle()
    photos = sample_photos(extended=True)
    images = np.stack([to_model_input(p, tuple(bundle.manifest.input_size)) for p in photos.values()])
    rows = []
    with Explainer(bundle, backend="ort-cpu") as explainer:
        _, features = explainer.predict(images)
        for base in BASES:
            options = {"iterations": args.opti_iterations} if base == "opti-cam" else {}
            start = time.perf_counter()
            out = explainer.explain(images, base, **options)
            seconds = time.perf_counter() - start
            rows.append({"method": base, "variant": "base", **classification_metrics(out.scores, out.masked_scores),
                         "seconds_per_image": seconds / len(images)})
            for combine in ("and-not", "positive"):
                start = time.perf_counter()
                maps = class_map_to_saliency(refine(features, out.maps, args.aperture, combine), images)
                extra = time.perf_counter() - start
                masked = explainer.predict_proba(images * maps[:, None])[np.arange(len(images)), out.targets]
                rows.append({"method": base, "variant": f"conceptor {combine}",
                             **classification_metrics(out.scores, masked),
                             "seconds_per_image": (seconds + extra) / len(images)})
            for r in rows[-3:]:
                print(f"{r['method']:12s} {r['variant']:22s} AD {r['AD']:6.2f}  AI {r['AI']:6.2f}"
                      f"  AG {r['AG']:6.2f}  {r['seconds_per_image']:.2f} s/img", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"photos": list(photos), "aperture": args.aperture, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
