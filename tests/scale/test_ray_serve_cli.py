"""``opticam-rt serve --ray`` as a user runs it: a subprocess that starts its own local Ray (in a
private network namespace, loopback only), serves through Ray Serve's proxy, and on SIGTERM
shuts the application down and exits 0."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests

import tiny_runtime_net

pytest.importorskip("ray.serve", reason="needs opticam-rt[ray-serve]")
pytest.importorskip("starlette", reason="needs opticam-rt[serve]")

READY_TIMEOUT_S = 240.0
EXIT_TIMEOUT_S = 120.0


def test_serve_ray_cli_serves_and_exits_0_on_sigterm(tmp_path_factory, loopback_only):
    bundle = tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", "from opticam_rt.cli import main; main()", "serve", "--bundle", str(bundle.path),
         "--ray", "--replicas", "1", "--replica-cpus", "1", "--port", str(port), "--methods", "grad-cam",
         "--backend", "ort-cpu", "--threads", "1", "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                if requests.get(f"{url}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "serve --ray did not get ready"
            time.sleep(1)
        x = np.random.default_rng(2).random((1, 3, *tiny_runtime_net.INPUT_SIZE), dtype=np.float32)
        body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
        reply = requests.post(f"{url}/v2/models/grad-cam/infer", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        outputs = {o["name"]: o for o in reply.json()["outputs"]}
        assert outputs["map"]["shape"] == [1, *tiny_runtime_net.INPUT_SIZE]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=EXIT_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    events = [json.loads(line)["msg"] for line in err.splitlines() if line.startswith("{")]
    assert "listening" in events and events[-1] == "exiting", events
