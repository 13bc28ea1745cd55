"""One OpenVINO Explainer shared by threads: a lock per compiled graph against a pool of infer requests.

Usage: python scripts/ov_thread_lock.py BUNDLE [--threads 4] [--calls 40] [--method grad-cam]
Prints, for each strategy, the wall time per call (total wall time / calls) with THREADS threads
calling ``explain`` on one batch-1 image each, and the max map difference against one thread.
The pool variant gives each compiled graph THREADS infer requests, taken from a queue per call.
"""

from __future__ import annotations

import argparse
import queue
import threading
import time

import numpy as np


def main() -> None:
    from opticam_rt.bundle import load_bundle
    from opticam_rt.images import sample_photos, to_model_input
    from opticam_rt.runtime import Explainer
    from opticam_rt.runtime import openvino_runner as ovr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--method", default="grad-cam")
    args = parser.parse_args()
    bundle = load_bundle(args.bundle)
    image = to_model_input(next(iter(sample_photos().values())), tuple(bundle.manifest.input_size))[None]
    options = {"iterations": 10} if args.method == "opti-cam" else {}

    class Pooled(ovr.CompiledGraph):
        def __init__(self, request) -> None:  # type: ignore[no-untyped-def]
            super().__init__(request)
            self.free: queue.Queue = queue.Queue()
            self.free.put(request)
            for _ in range(args.threads - 1):
                self.free.put(request.get_compiled_model().create_infer_request())

        def infer(self, graph, feeds):  # type: ignore[no-untyped-def]
            request = self.free.get()
            try:
                result = request.infer(feeds)
                return {name: np.array(result[name]) for name in ovr.GRAPH_SIGNATURES[graph][1]}
            finally:
                self.free.put(request)

    with Explainer(bundle, backend="ov-cpu") as alone:
        reference = alone.explain(image, args.method, **options).maps
    for label, entry in (("lock", ovr.CompiledGraph), ("pool", Pooled)):
        ovr.CompiledGraph, original = entry, ovr.CompiledGraph  # type: ignore[misc]
        try:
            with Explainer(bundle, backend="ov-cpu") as shared:
                shared.explain(image, args.method, **options)  # compile outside the timing
                diffs: list[float] = []

                def work() -> None:
                    for _ in range(args.calls // args.threads):
                        diffs.append(float(np.abs(shared.explain(image, args.method, **options).maps - reference).max()))

                threads = [threading.Thread(target=work) for _ in range(args.threads)]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - start
        finally:
            ovr.CompiledGraph = original  # type: ignore[misc]
        print(f"{label}: {1000 * wall / len(diffs):.1f} ms/call over {len(diffs)} calls from {args.threads} threads; "
              f"max |map - one thread| {max(diffs):.2g}")


if __name__ == "__main__":
    main()
