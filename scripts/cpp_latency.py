"""C++ (examples/cpp, OpenVINO) vs Python latency and map agreement, per explainer graph.

    python scripts/cpp_latency.py BUNDLE PHOTO [--binary PATH] [--threads 2] [--repeat 3] [--methods a,b]

Builds examples/cpp into a temporary folder unless --binary is given. For each method it times
one inference call (the fastest of --repeat, after one warm-up run in each process) of the same
explainer graph three ways: the C++ binary (OpenVINO CPU, f32), Python with OpenVINO (the same
engine and precision) and Python's GraphExplainer (ONNX Runtime); all with the same thread count.
It prints a Markdown table with the C++ map's max |difference| from each Python map.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def best_of(fn, repeat: int) -> tuple[float, object]:
    out = fn()  # warm-up (first-call allocations)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("photo")
    parser.add_argument("--binary")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--methods")
    args = parser.parse_args()

    import openvino as ov

    from opticam_rt.bundle import load_bundle
    from opticam_rt.images import load_image
    from opticam_rt.runtime.embedded import GraphExplainer

    work = Path(tempfile.mkdtemp(prefix="cpp-latency-"))
    binary = Path(args.binary) if args.binary else None
    if binary is None:
        subprocess.run(["bash", str(ROOT / "examples" / "cpp" / "build.sh"), str(work / "build")], check=True,
                       capture_output=True)
        binary = work / "build" / "opticam-explain"
    bundle = load_bundle(args.bundle)
    methods = args.methods.split(",") if args.methods else list(bundle.manifest.explainers)
    pixels = load_image(args.photo, tuple(bundle.manifest.input_size)).pixels[None]
    graphs = GraphExplainer(bundle, threads=args.threads)
    core = ov.Core()

    print(f"bundle {bundle.manifest.model_name}, input {bundle.manifest.input_size}, {args.threads} threads, "
          f"best of {args.repeat}")
    print("| method | C++ OpenVINO (ms) | Python OpenVINO (ms) | Python ONNX Runtime (ms) | max diff vs Py OV | max diff vs Py ORT |")
    print("|---|---|---|---|---|---|")
    for method in methods:
        out = work / f"{method}.npy"
        done = subprocess.run(
            [str(binary), args.bundle, method, args.photo, str(out), "--threads", str(args.threads),
             "--repeat", str(args.repeat + 1)],
            capture_output=True, text=True, check=True,
        )
        record = json.loads(done.stdout)
        cpp_map = np.load(out)
        compiled = core.compile_model(
            core.read_model(str(bundle.explainer_path(method))), "CPU",
            {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads},
        )
        request = compiled.create_infer_request()
        ov_s, ov_out = best_of(lambda: request.infer({"image": pixels}), args.repeat)
        ov_map = np.asarray(ov_out[compiled.output("map")])[0]
        ort_s, ort_out = best_of(lambda: graphs.run(pixels, method), args.repeat)
        print(f"| {method} | {record['seconds'] * 1e3:.1f} | {ov_s * 1e3:.1f} | {ort_s * 1e3:.1f} | "
              f"{np.abs(cpp_map - ov_map).max():.1e} | {np.abs(cpp_map - ort_out.map[0]).max():.1e} |", flush=True)


if __name__ == "__main__":
    main()
