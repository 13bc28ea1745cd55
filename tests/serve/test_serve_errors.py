"""Bad requests and overload: each a 4xx/5xx with the one-line OIP error body, and the server
unaffected (a good request right after each one still gets the library's answer)."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests


def image_tensor(x: np.ndarray, datatype: str = "FP32", shape=None) -> dict:
    return {"name": "image", "shape": list(shape or x.shape), "datatype": datatype, "data": x.ravel().tolist()}


def binary_body(x: np.ndarray, declared: int | None = None, cut: int = 0) -> tuple[bytes, dict]:
    raw = x.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": declared or len(raw)}}]}).encode()
    body = header + raw
    return body[: len(body) - cut], {"Inference-Header-Content-Length": str(len(header)),
                                     "Content-Type": "application/octet-stream"}


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def _bytes_json(*files: bytes) -> dict:
    return {"inputs": [{"name": "image", "shape": [len(files)], "datatype": "BYTES",
                        "data": [base64.b64encode(f).decode() for f in files]}]}


def bad_requests(x: np.ndarray) -> dict[str, tuple[str, str, dict | bytes, dict, int, str]]:
    """name -> (model, method, body (JSON dict or raw bytes), headers, expected status, words in the error)."""
    one = x[:1]
    nan = one.copy()
    nan[0, 1, 2, 3] = np.nan
    cases = {
        "wrong shape": ("grad-cam", {"inputs": [image_tensor(np.zeros((1, 3, 16, 16), np.float32))]}, 400, "shape [N, 3, 32, 32]"),
        "wrong rank": ("grad-cam", {"inputs": [image_tensor(one, shape=[3, 32, 32])]}, 400, "shape"),
        "wrong datatype": ("grad-cam", {"inputs": [image_tensor(one, "FP64")]}, 400, "must be FP32"),
        "unknown datatype": ("grad-cam", {"inputs": [image_tensor(one, "FLOAT")]}, 400, "unknown datatype"),
        "NaN pixels": ("grad-cam", {"inputs": [{**image_tensor(one), "data": [float(v) for v in nan.ravel()]}]}, 400, "NaN"),
        "pixels in 0..255": ("grad-cam", {"inputs": [image_tensor(one * 255)]}, 400, "[0, 1]"),
        "data count": ("grad-cam", {"inputs": [{**image_tensor(one), "data": [0.5] * 10}]}, 400, "10 values"),
        "strings as FP32": ("grad-cam", {"inputs": [{**image_tensor(one), "data": ["a"] * one.size}]}, 400, "not FP32 numbers"),
        "unknown model": ("no-such-cam", {"inputs": [image_tensor(one)]}, 404, "unknown model"),
        "unserved model": ("score-cam", {"inputs": [image_tensor(one)]}, 404, "unknown model"),
        "unknown option": ("opti-cam", {"inputs": [image_tensor(one)], "parameters": {"iteratons": 5}}, 400, "'iterations'"),
        "option out of range": ("opti-cam", {"inputs": [image_tensor(one)], "parameters": {"iterations": 0}}, 400, "iterations must be >= 1"),
        "option of another type": ("opti-cam", {"inputs": [image_tensor(one)], "parameters": {"lr": "fast"}}, 400, "lr must be a number"),
        "option not a choice": ("opti-cam", {"inputs": [image_tensor(one)], "parameters": {"loss": "l2"}}, 400, "loss must be one of"),
        "option of another method": ("grad-cam", {"inputs": [image_tensor(one)], "parameters": {"iterations": 5}}, 400, "grad-cam has no option"),
        "target out of range": ("grad-cam", {"inputs": [image_tensor(one), {"name": "target", "shape": [1], "datatype": "INT64", "data": [7]}]}, 400, "out of range"),
        "target shape": ("grad-cam", {"inputs": [image_tensor(one), {"name": "target", "shape": [2], "datatype": "INT64", "data": [1, 2]}]}, 400, "shape [1]"),
        "target as floats": ("grad-cam", {"inputs": [image_tensor(one), {"name": "target", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, 400, "INT64"),
        "unknown input": ("grad-cam", {"inputs": [image_tensor(one), {"name": "mask", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, 400, "unknown input 'mask'"),
        "no image": ("grad-cam", {"inputs": [{"name": "target", "shape": [1], "datatype": "INT64", "data": [1]}]}, 400, "no 'image'"),
        "no inputs": ("grad-cam", {"id": "x"}, 400, "'inputs'"),
        "unknown output": ("grad-cam", {"inputs": [image_tensor(one)], "outputs": [{"name": "logits"}]}, 400, "unknown output"),
        "non-image BYTES": ("grad-cam", _bytes_json(b"this is not an image"), 400, "not a readable image"),
        "bad base64": ("grad-cam", {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]}, 400, "base64"),
        "image too large": ("grad-cam", _bytes_json(_png(1200, 1000)), 413, "over this server's limit"),
        "too many images": ("grad-cam", {"inputs": [image_tensor(np.zeros((65, 3, 32, 32), np.float32))]}, 413, "at most 64"),
        "not JSON": ("grad-cam", b"{inputs: [", 400, "not valid JSON"),
        "truncated JSON": ("grad-cam", json.dumps({"inputs": [image_tensor(one)]}).encode()[:500], 400, "not valid JSON"),
    }
    out = {name: (model, body, {}, status, words) for name, (model, body, status, words) in cases.items()}
    out["truncated binary"] = ("grad-cam", *binary_body(one, cut=100), 400, "truncated")
    out["binary size mismatch"] = ("grad-cam", *binary_body(one, declared=one.nbytes - 8), 400, "belong to no input")
    out["header length past body"] = ("grad-cam", binary_body(one)[0][:50], {"Inference-Header-Content-Length": "400"}, 400, "only 50 bytes")
    out["huge body"] = ("grad-cam", b"0" * (5 << 20), {}, 413, "over this server's limit")
    return out


CASES = sorted(bad_requests(np.zeros((1, 3, 32, 32), np.float32)))


@pytest.mark.parametrize("case", CASES)
def test_bad_request_is_a_4xx_with_one_line(server, images, case):
    model, body, headers, status, words = bad_requests(images)[case]
    url = f"http://{server}/v2/models/{model}/infer"
    if isinstance(body, dict):
        r = requests.post(url, data=json.dumps(body), headers={"Content-Type": "application/json", **headers}, timeout=60)
    else:
        r = requests.post(url, data=body, headers=headers, timeout=60)
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert words in error, error
    assert "\n" not in error and "Traceback" not in error and len(error) < 400, error
    # the server is unaffected
    good = requests.post(f"http://{server}/v2/models/grad-cam/infer", json={"inputs": [image_tensor(images[:1])]}, timeout=60)
    assert good.status_code == 200, good.text[:300]


@pytest.mark.parametrize("method,path", [("GET", "/v2/models/grad-cam/infer"), ("GET", "/v2/nowhere"),
                                         ("POST", "/v2/health/live"), ("GET", "/v2/models/grad-cam/versions/2")])
def test_unknown_endpoints_answer_oip_errors(server, method, path):
    r = requests.request(method, f"http://{server}{path}", timeout=30)
    assert r.status_code in (404, 405), r.status_code
    assert "\n" not in r.json()["error"]


def test_queue_full_is_503_with_retry_after(start_server, images):
    """One worker, a queue of one request: of 6 slow requests at once, one runs, one waits and
    the rest are refused at once; the refused ones succeed when retried later."""
    slow = {"inputs": [image_tensor(images[:1])], "parameters": {"iterations": 1500}}
    with start_server(methods=("opti-cam",), max_queue=1, max_batch=1, workers=1) as address:
        url = f"http://{address}/v2/models/opti-cam/infer"
        barrier = threading.Barrier(6)

        def send(_):
            barrier.wait()
            return requests.post(url, json=slow, timeout=120)

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(send, range(6)))
        codes = sorted(r.status_code for r in answers)
        assert 503 in codes and 200 in codes, codes
        assert set(codes) <= {200, 503}, codes
        for r in answers:
            if r.status_code == 503:
                assert r.headers["Retry-After"] == "1" and "queue full" in r.json()["error"]
        again = requests.post(url, json={**slow, "parameters": {"iterations": 5}}, timeout=60)
        assert again.status_code == 200


def test_request_timeout_is_504_and_the_server_goes_on(start_server, images):
    with start_server(methods=("opti-cam",), request_timeout_s=0.3) as address:
        url = f"http://{address}/v2/models/opti-cam/infer"
        start = time.monotonic()
        r = requests.post(url, json={"inputs": [image_tensor(images[:1])], "parameters": {"iterations": 3000}}, timeout=60)
        assert r.status_code == 504 and "timed out after 0.3 s" in r.json()["error"]
        assert time.monotonic() - start < 5
        # the caller's own (OIP) timeout, in microseconds, is honoured below the server's
        r = requests.post(url, json={"inputs": [image_tensor(images[:1])], "parameters": {"iterations": 3000, "timeout": 100_000}}, timeout=60)
        assert r.status_code == 504 and "0.1 s" in r.json()["error"]
        ok = requests.post(url, json={"inputs": [image_tensor(images[:1])], "parameters": {"iterations": 3}}, timeout=60)
        assert ok.status_code == 200


def test_a_body_that_never_arrives_is_408_not_a_hung_connection(start_server):
    with start_server(methods=("grad-cam",), body_timeout_s=0.5) as address:
        host, port = address.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /v2/models/grad-cam/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"inputs\": [")
            reply = b""
            start = time.monotonic()
            while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            assert time.monotonic() - start < 5
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b'"error"' in reply and b"not received in full within 0.5 s" in reply
