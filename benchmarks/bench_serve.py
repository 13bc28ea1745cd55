"""Load test of ``opticam-rt serve`` on loopback, and a soak measuring the server's memory.

Run: ``python benchmarks/bench_serve.py [--bundle DIR] [--out benchmarks/results/serve.json]``
(a script, not a pytest suite: it starts servers as subprocesses; needs opticam-rt[serve]).

* Model: EfficientNet-Lite0, the built-in bundle (``opticam_rt.cache.builtin_bundle``, exported
  to the per-user cache on first use) unless ``--bundle``. Images: the sample photos at 224 x 224,
  sent as binary FP32 tensors (the graphs' contract), maps returned as binary tensors.
* Server: ``opticam-rt serve --methods grad-cam,opti-cam`` with the default backend (``auto``:
  OpenVINO for both on a CPU machine), all cores, batching on (``--max-batch 8 --max-wait-ms 5``)
  or off (``--max-batch 1``). Each server is warmed up (every padded batch size compiled) before
  timing.
* Load: closed loop, C client threads (C = 1, 8, 32) each sending its next request as soon as
  the last one is answered, a fixed number of requests per case (bounded by ``--time-limit`` s).
  Latency is measured by the client (request sent to response read); p50/p99 over the requests,
  throughput = requests / wall time. Opti-CAM runs ``--opti-iterations`` steps (default 10).
  The client threads share the server's cores (2 here): the numbers include that contention.
* Library: the same images through ``Explainer.explain`` in a loop in this process, one image
  per call (no HTTP, no batching), the baseline a server is compared with.
* Batch composition: Opti-CAM's served maps (batched with other requests) against the library's
  one-image maps for the same image, the max |difference| (Adam amplifies rounding differences
  of batched kernels; Grad-CAM is checked the same way).
* Soak: ``--soak`` Grad-CAM requests (default 10,000) at concurrency 8, batching on, on a fresh
  server; its RSS (``/proc/PID/status`` VmRSS) after ``--soak-warmup`` requests and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def server(bundle: str, *flags: str) -> tuple[subprocess.Popen, str]:
    """A ``serve`` subprocess on a free loopback port, once ready -> (process, base URL)."""
    import requests

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from opticam_rt.cli import main; main()", "serve", "--bundle", bundle, "--port", "0",
         "--methods", "grad-cam,opti-cam", *flags],
        stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    port: list[int] = []

    def pump() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            if not port and '"listening"' in line:
                port.append(json.loads(line)["port"])

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 600
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server not ready within 600 s")
        if port:
            try:
                if requests.get(f"http://127.0.0.1:{port[0]}/v2/health/ready", timeout=5).status_code == 200:
                    return proc, f"http://127.0.0.1:{port[0]}"
            except requests.ConnectionError:
                pass
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=120)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def body(image: np.ndarray, params: dict) -> tuple[bytes, dict]:
    """A binary infer request for one image (3, H, W), all outputs binary."""
    raw = np.ascontiguousarray(image[None], dtype="<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "image", "shape": [1, *image.shape], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True, **params}}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}


def parse(response, size: tuple[int, int]) -> tuple[dict, np.ndarray]:
    """-> (the JSON header, the map (H, W))."""
    n = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.content[:n])
    at = n
    for out in header["outputs"]:
        k = out["parameters"]["binary_data_size"]
        if out["name"] == "map":
            return header, np.frombuffer(response.content[at : at + k], dtype="<f4").reshape(size)
        at += k
    raise RuntimeError("no map in the response")


def load(url: str, model: str, images: np.ndarray, params: dict, concurrency: int, requests_total: int,
         time_limit: float, keep_maps: bool = False, on_progress=None) -> dict:
    """Closed-loop load: ``concurrency`` threads, ``requests_total`` requests in all."""
    import requests

    bodies = [body(img, params) for img in images]
    size = images.shape[2:]
    latencies: list[float] = []
    errors: list[str] = []
    batch_sizes: list[int] = []
    maps: dict[int, np.ndarray] = {}
    counter = iter(range(requests_total))
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def worker() -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            data, headers = bodies[i % len(bodies)]
            start = time.perf_counter()
            try:
                r = session.post(f"{url}/v2/models/{model}/infer", data=data, headers=headers, timeout=300)
                seconds = time.perf_counter() - start
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:100]}")
                    continue
                header, saliency = parse(r, size)
            except Exception as exc:  # noqa: BLE001 - counted as an error of the load test
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(seconds)
                batch_sizes.append(header["parameters"]["batch_size"])
                if keep_maps:
                    maps.setdefault(i % len(bodies), saliency)
                if on_progress:
                    on_progress(len(latencies))

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1000
    return {
        "model": model, "concurrency": concurrency, "requests": len(latencies), "errors": len(errors),
        "error_examples": errors[:3], "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None, "req_per_s": len(latencies) / wall,
        "mean_batch": float(np.mean(batch_sizes)) if batch_sizes else None, "wall_s": wall,
        **({"maps": maps} if keep_maps else {}),
    }


def library_loop(bundle: str, model: str, images: np.ndarray, params: dict, calls: int, time_limit: float):
    from opticam_rt.runtime import Explainer

    with Explainer(bundle) as explainer:
        explainer.explain(images[:1], model, **params)  # sessions made, shapes compiled
        latencies, maps = [], {}
        start = time.perf_counter()
        for i in range(calls):
            if time.perf_counter() - start > time_limit:
                break
            t = time.perf_counter()
            out = explainer.explain(images[i % len(images)][None], model, **params)
            latencies.append(time.perf_counter() - t)
            maps.setdefault(i % len(images), out.maps[0])
        wall = time.perf_counter() - start
        backend = explainer.runner_for(model).name
    lat = np.array(latencies) * 1000
    return {"model": model, "concurrency": 1, "requests": len(lat), "errors": 0, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "req_per_s": len(lat) / wall, "backend": backend, "maps": maps}


def library_batch(bundle: str, model: str, images: np.ndarray, params: dict, rounds: int = 5) -> dict:
    """The library on 8 images at once: the compute ceiling of batching (images per second)."""
    from opticam_rt.runtime import Explainer

    batch = np.stack([images[i % len(images)] for i in range(8)])
    with Explainer(bundle) as explainer:
        explainer.explain(batch, model, **params)
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            explainer.explain(batch, model, **params)
            times.append(time.perf_counter() - t)
    return {"median_s": float(np.median(times)), "images_per_s": 8 / float(np.median(times))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    parser.add_argument("--opti-iterations", type=int, default=10)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--grad-requests", default="100,200,320", help="requests per concurrency, Grad-CAM")
    parser.add_argument("--opti-requests", default="16,48,64", help="requests per concurrency, Opti-CAM")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per case at most")
    parser.add_argument("--soak", type=int, default=10_000)
    parser.add_argument("--soak-warmup", type=int, default=500)
    parser.add_argument("--sections", default="load,soak", help="what to run: load, soak or both")
    args = parser.parse_args()
    sections = set(args.sections.split(","))

    from opticam_rt.cache import builtin_bundle
    from opticam_rt.images import sample_photos, to_model_input

    bundle = args.bundle or str(builtin_bundle(log=lambda m: print(m, file=sys.stderr)).path)
    from opticam_rt.bundle import load_bundle

    size = tuple(load_bundle(bundle).manifest.input_size)
    images = np.stack([to_model_input(p, size) for p in sample_photos(extended=True).values()])
    conc = [int(c) for c in args.concurrency.split(",")]
    cases = {"grad-cam": ({}, [int(n) for n in args.grad_requests.split(",")]),
             "opti-cam": ({"iterations": args.opti_iterations}, [int(n) for n in args.opti_requests.split(",")])}
    out = Path(args.out)
    results: dict = json.loads(out.read_text()) if out.exists() else {}
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_before": os.getloadavg()}

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean = {**results, "library": {m: {k: v for k, v in lib.items() if k != "_maps"} for m, lib in results.get("library", {}).items()}}
        out.write_text(json.dumps(clean, indent=2) + "\n")

    if "load" in sections:
        run_load(args, bundle, images, conc, cases, results, save)
    if "soak" in sections:
        results["soak"] = run_soak(args, bundle, images)
        save()
        print(f"soak: {results['soak']}", file=sys.stderr)
    if results.get("served"):
        print(table(results))


def run_load(args, bundle, images, conc, cases, results, save) -> None:  # type: ignore[no-untyped-def]
    results.update({"images": len(images), "opti_iterations": args.opti_iterations, "library": {}, "served": [],
                    "batch_spread": {}})
    for model, (params, counts) in cases.items():
        lib = library_loop(bundle, model, images, params, counts[-1], args.time_limit)
        results["library"][model] = {k: v for k, v in lib.items() if k != "maps"}
        results["library"][model]["_maps"] = lib["maps"]
        results["library_batch8"] = results.get("library_batch8", {})
        results["library_batch8"][model] = library_batch(bundle, model, images, params)
        print(f"library {model}: {results['library'][model]} batch 8: {results['library_batch8'][model]}", file=sys.stderr)
    save()

    for label, flags in (("on", ["--max-batch", "8", "--max-wait-ms", "5"]), ("off", ["--max-batch", "1"])):
        proc, url = server(bundle, *flags)
        try:
            for model, (params, counts) in cases.items():
                for c, n in zip(conc, counts):
                    r = load(url, model, images, params, c, n, args.time_limit, keep_maps=(label == "on" and c == max(conc)))
                    maps = r.pop("maps", None)
                    if maps:
                        ref = results["library"][model]["_maps"]
                        results["batch_spread"][model] = max(float(np.abs(maps[i] - ref[i]).max()) for i in maps if i in ref)
                    r["batching"] = label
                    results["served"].append(r)
                    save()
                    print(f"batching {label}: {r}", file=sys.stderr)
        finally:
            results.setdefault("exit_codes", {})[label] = stop(proc)
            save()


def run_soak(args, bundle, images) -> dict:  # type: ignore[no-untyped-def]
    proc, url = server(bundle, "--max-batch", "8", "--max-wait-ms", "5")
    soak: dict = {"requests": args.soak, "concurrency": 8, "rss_mb": {}}
    try:
        soak["rss_mb"]["started"] = rss_mb(proc.pid)

        def progress(done: int) -> None:
            if done == args.soak_warmup or done % 1000 == 0:
                soak["rss_mb"][str(done)] = rss_mb(proc.pid)

        r = load(url, "grad-cam", images, {}, 8, args.soak, time_limit=3600, on_progress=progress)
        soak["rss_mb"]["end"] = rss_mb(proc.pid)
        soak.update({k: r[k] for k in ("requests", "errors", "p50_ms", "p99_ms", "req_per_s", "mean_batch", "wall_s")})
        warm = soak["rss_mb"][str(args.soak_warmup)]
        soak["growth_after_warmup_pct"] = 100 * (soak["rss_mb"]["end"] - warm) / warm
    finally:
        soak["exit_code"] = stop(proc)
    return soak


def table(results: dict) -> str:
    """The results as the markdown table of docs/serving.md."""
    rows = ["| method | mode | concurrency | p50 ms | p99 ms | req/s | mean batch | errors |", "|---|---|---|---|---|---|---|---|"]
    for model, lib in results["library"].items():
        rows.append(f"| {model} | library loop ({lib['backend']}) | 1 | {lib['p50_ms']:.1f} | {lib['p99_ms']:.1f} | {lib['req_per_s']:.1f} | 1 | 0 |")
        b8 = results.get("library_batch8", {}).get(model)
        if b8:
            rows.append(f"| {model} | library, 8 images per call | - | {1000 * b8['median_s']:.1f} (call) | - | {b8['images_per_s']:.1f} img/s | 8 | 0 |")
        for r in results["served"]:
            if r["model"] == model:
                rows.append(f"| {model} | served, batching {r['batching']} | {r['concurrency']} | {r['p50_ms']:.1f} | "
                            f"{r['p99_ms']:.1f} | {r['req_per_s']:.1f} | {r['mean_batch']:.2f} | {r['errors']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
