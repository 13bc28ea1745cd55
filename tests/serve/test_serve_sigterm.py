"""``opticam-rt serve`` as a process: SIGTERM with a request in flight finishes that request,
then exits 0; every log line is one JSON object; a bad bundle is one line and exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
CLI = "from opticam_rt.cli import main; main()"


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _wait_port(proc: subprocess.Popen, lines: list[str], timeout: float = 60.0) -> int:
    """Read the server's stderr (on a thread, into ``lines``) until it logs its port."""
    found: list[int] = []

    def pump() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if not found and '"listening"' in line:
                found.append(json.loads(line)["port"])

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found:
        assert proc.poll() is None, f"server exited early: {''.join(lines)[-2000:]}"
        assert time.monotonic() < deadline, "server did not log its port"
        time.sleep(0.05)
    return found[0]


def test_sigterm_drains_the_request_in_flight_and_exits_0(bundle, images):
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", "--bundle", str(bundle.path), "--port", "0", "--methods", "opti-cam",
         "--threads", "1"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(), cwd=ROOT,
    )
    lines: list[str] = []
    try:
        port = _wait_port(proc, lines)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while requests.get(url + "/v2/health/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = {"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32",
                            "data": images[:1].ravel().tolist()}], "parameters": {"iterations": 2000}}
        answer: list[requests.Response] = []
        sender = threading.Thread(target=lambda: answer.append(requests.post(url + "/v2/models/opti-cam/infer", json=body, timeout=120)))
        sender.start()
        deadline = time.monotonic() + 30  # until the request is being computed
        while "opticam_in_flight 1.0" not in requests.get(url + "/metrics", timeout=5).text:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        sender.join(timeout=120)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert answer and answer[0].status_code == 200, answer and answer[0].text[:300]
    maps = {o["name"]: o for o in answer[0].json()["outputs"]}["map"]
    assert np.isfinite(np.array(maps["data"])).all()
    time.sleep(0.2)  # the pump thread reads the last lines
    records = [json.loads(line) for line in lines if line.strip()]  # every line is one JSON object
    access = [r for r in records if r["logger"] == "opticam_rt.serve.access" and r["path"].endswith("/infer")]
    assert access and access[-1]["status"] == 200 and access[-1]["model"] == "opti-cam" and access[-1]["ms"] > 0
    assert records[-1]["msg"] == "exiting" and records[-1]["signal"] == "SIGTERM"
    assert not any("Traceback" in line for line in lines)


def test_bad_bundle_is_one_line_and_exit_2(tmp_path):
    out = subprocess.run([sys.executable, "-c", CLI, "serve", "--bundle", str(tmp_path / "nope"), "--port", "0"],
                         capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and "nope" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("flag", ["--methods=grad-cam,nope", "--max-batch=0"])
def test_bad_flags_are_usage_errors(bundle, flag):
    out = subprocess.run([sys.executable, "-c", CLI, "serve", "--bundle", str(bundle.path), flag],
                         capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
