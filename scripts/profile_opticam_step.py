"""Where the fused Opti-CAM step spends its time, per operator type, on ONNX Runtime and OpenVINO.

Usage: python scripts/profile_opticam_step.py BUNDLE [--batch N] [--runs R]
Prints, per engine, the share of the step's kernel time by op type (top 10) and the median
wall time per step. Shares are steadier than absolute times on a busy machine.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def feeds_for(bundle, batch: int) -> dict[str, np.ndarray]:
    m = bundle.manifest
    rng = np.random.default_rng(0)
    k, h, w = m.tap_shape
    cot = np.zeros((batch, m.num_classes), np.float32)
    cot[:, 0] = 1
    return {
        "image": rng.random((batch, 3, *m.input_size), dtype=np.float32),
        "features": rng.random((batch, k, h, w), dtype=np.float32),
        "u": np.zeros((batch, k), np.float32),
        "cotangent": cot,
    }


def profile_ort(bundle, feeds, runs: int) -> tuple[float, dict[str, float]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(bundle.graph_path("opticam_step")), opts, providers=["CPUExecutionProvider"])
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t)
    events = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
    return statistics.median(times), by_op


def profile_ov(bundle, feeds, runs: int) -> tuple[float, dict[str, float]]:
    import openvino as ov

    core = ov.Core()
    model = core.read_model(str(bundle.graph_path("opticam_step")))
    model.reshape({k: list(v.shape) for k, v in feeds.items()})
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer(feeds)
    times = []
    by_op: dict[str, float] = collections.Counter()
    for _ in range(runs):
        t = time.perf_counter()
        request.infer(feeds)
        times.append(time.perf_counter() - t)
        for info in request.profiling_info:
            by_op[info.node_type] += info.real_time.total_seconds() * 1e6
    return statistics.median(times), by_op


def main() -> None:
    from opticam_rt.bundle import load_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    feeds = feeds_for(bundle, args.batch)
    for name, fn in (("onnxruntime", profile_ort), ("openvino", profile_ov)):
        median, by_op = fn(bundle, feeds, args.runs)
        total = sum(by_op.values())
        top = sorted(by_op.items(), key=lambda kv: -kv[1])[:10]
        print(f"{name}: median {median * 1e3:.1f} ms per step (batch {args.batch}); kernel time by op type:")
        for op, us in top:
            print(f"  {op:<22} {100 * us / total:5.1f}%")


if __name__ == "__main__":
    main()
