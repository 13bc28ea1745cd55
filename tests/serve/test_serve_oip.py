"""The server through Triton's own HTTP client (and raw JSON, as curl sends it): readiness,
metadata, infer with JSON and binary tensors, encoded images, concurrency with batching, metrics.
Served values are compared with the library's Explainer computing one image per call."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

http = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (the dev extra)")


def client(address: str):
    return http.InferenceServerClient(address, connection_timeout=30, network_timeout=120)


def image_input(x: np.ndarray, binary: bool = True):
    tensor = http.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def outputs(binary: bool):
    return [http.InferRequestedOutput(n, binary_data=binary) for n in ("map", "target", "score", "masked_score")]


def assert_matches(result, want, tol, where=""):
    np.testing.assert_allclose(result.as_numpy("map"), want.maps, atol=tol.MAP_ATOL, rtol=0, err_msg=where)
    np.testing.assert_array_equal(result.as_numpy("target"), want.targets, err_msg=where)
    np.testing.assert_allclose(result.as_numpy("score"), want.scores, rtol=tol.SCORE_RTOL, err_msg=where)
    np.testing.assert_allclose(result.as_numpy("masked_score"), want.masked_scores, rtol=tol.SCORE_RTOL, atol=1e-7, err_msg=where)


def test_health_and_readiness(server):
    c = client(server)
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("grad-cam") and c.is_model_ready("opti-cam")
    assert not c.is_model_ready("score-cam")  # not served here
    assert not c.is_model_ready("no-such-model")
    meta = c.get_server_metadata()
    assert meta["name"] == "opticam-rt" and "binary_tensor_data" in meta["extensions"]


def test_model_metadata(server):
    meta = client(server).get_model_metadata("opti-cam")
    assert meta["name"] == "opti-cam" and meta["versions"] == ["1"]
    assert {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]} == {
        "image": ("FP32", [-1, 3, 32, 32]), "target": ("INT64", [-1])}
    assert {t["name"]: (t["datatype"], t["shape"]) for t in meta["outputs"]} == {
        "map": ("FP32", [-1, 32, 32]), "target": ("INT64", [-1]), "score": ("FP32", [-1]), "masked_score": ("FP32", [-1])}
    assert set(meta["parameters"]["options"]) == {"iterations", "lr", "loss", "tol", "patience", "pipeline"}
    assert meta["parameters"]["options"]["iterations"]["default"] == 100
    with pytest.raises(Exception, match="unknown model"):
        client(server).get_model_metadata("nope")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_grad_cam_equals_the_library(server, images, library, tol, binary):
    result = client(server).infer("grad-cam", [image_input(images[:3], binary)], outputs=outputs(binary))
    params = result.get_response()["parameters"]
    assert_matches(result, library("grad-cam", images[:3], params["backend"]), tol)
    assert result.as_numpy("map").dtype == np.float32 and result.as_numpy("target").dtype == np.int64
    # binary outputs really travel as bytes, JSON ones as numbers
    entry = {o["name"]: o for o in result.get_response()["outputs"]}["map"]
    assert ("binary_data_size" in entry.get("parameters", {})) == binary and ("data" in entry) != binary


def test_targets_and_options(server, images, library, tol):
    targets = np.array([1, 4], dtype=np.int64)
    target = http.InferInput("target", [2], "INT64")
    target.set_data_from_numpy(targets)
    result = client(server).infer("opti-cam", [image_input(images[:2]), target],
                                  parameters={"iterations": 7, "lr": "0.05"})  # a string, read as the CLI reads it
    want = library("opti-cam", images[:2], result.get_response()["parameters"]["backend"], targets, iterations=7, lr=0.05)
    np.testing.assert_array_equal(result.as_numpy("target"), targets)
    assert_matches(result, want, tol)
    other = library("opti-cam", images[:2], result.get_response()["parameters"]["backend"], targets, iterations=3)
    assert np.abs(other.maps - result.as_numpy("map")).max() > 10 * tol.MAP_ATOL  # the options were applied


def _png(x: np.ndarray, size: tuple[int, int]) -> bytes:
    from PIL import Image

    rgb = (np.clip(x.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).resize(size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_encoded_images_are_read_as_explain_reads_files(server, images, library, tol, tmp_path):
    from opticam_rt.images import load_image

    files = [_png(images[i], (48 + 16 * i, 40)) for i in range(2)]  # not at the model's size: resized
    pixels = []
    for i, data in enumerate(files):
        path = tmp_path / f"photo{i}.png"
        path.write_bytes(data)
        pixels.append(load_image(path, (32, 32)).pixels)  # what `opticam-rt explain` feeds the model
    pixels = np.stack(pixels)
    tensor = http.InferInput("image", [2], "BYTES")
    tensor.set_data_from_numpy(np.array(files, dtype=np.object_))
    result = client(server).infer("grad-cam", [tensor])
    backend = result.get_response()["parameters"]["backend"]
    want = library("grad-cam", pixels, backend)
    assert_matches(result, want, tol)
    # the same files as base64 strings in plain JSON
    body = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                        "data": [base64.b64encode(f).decode() for f in files]}]}
    raw = requests.post(f"http://{server}/v2/models/grad-cam/infer", json=body, timeout=60)
    assert raw.status_code == 200, raw.text
    maps = {o["name"]: o for o in raw.json()["outputs"]}["map"]
    np.testing.assert_allclose(np.array(maps["data"], dtype=np.float32).reshape(maps["shape"]), want.maps, atol=tol.MAP_ATOL)


def test_raw_json_as_curl_sends_it(server, images, library, tol):
    body = {"id": "req-1", "inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                       "data": images[:1].ravel().tolist()}],
            "outputs": [{"name": "map"}, {"name": "score"}]}
    r = requests.post(f"http://{server}/v2/models/grad-cam/infer", data=json.dumps(body),
                      headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    out = r.json()
    assert out["id"] == "req-1" and out["model_name"] == "grad-cam"
    assert [o["name"] for o in out["outputs"]] == ["map", "score"]
    got = {o["name"]: o for o in out["outputs"]}
    assert got["map"]["shape"] == [1, 32, 32] and got["map"]["datatype"] == "FP32"
    want = library("grad-cam", images[:1], out["parameters"]["backend"])
    np.testing.assert_allclose(np.array(got["map"]["data"], dtype=np.float32).reshape(1, 32, 32), want.maps, atol=tol.MAP_ATOL)


@pytest.mark.parametrize("method,options", [("grad-cam", {}), ("opti-cam", {"iterations": 10})], ids=["grad-cam", "opti-cam"])
def test_32_concurrent_requests_are_batched_and_identical(server, images, library, tol, method, options):
    """32 clients at once, one image each (8 distinct images, 4 requests each): every answer
    equals the library's for its image, and some requests were joined into batches."""
    def one(i: int):
        c = client(server)
        try:
            return i % 8, c.infer(method, [image_input(images[i % 8 : i % 8 + 1])], parameters=options)
        finally:
            c.close()

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    backend = results[0][1].get_response()["parameters"]["backend"]
    want = library(method, images, backend, **options)
    for j, result in results:
        assert_matches(result, type(want)(maps=want.maps[j : j + 1], targets=want.targets[j : j + 1],
                                          scores=want.scores[j : j + 1], masked_scores=want.masked_scores[j : j + 1]),
                       tol, where=f"image {j}")
    sizes = [r.get_response()["parameters"]["batch_size"] for _, r in results]
    assert max(sizes) > 1, f"no request was batched with another: batch sizes {sizes}"
    assert max(sizes) <= 8


def test_batching_off_runs_one_request_per_batch(start_server, images, library, tol):
    with start_server(methods=("grad-cam",), max_batch=1) as address:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: client(address).infer("grad-cam", [image_input(images[i : i + 1])]), range(8)))
    assert {r.get_response()["parameters"]["batch_size"] for r in results} == {1}
    want = library("grad-cam", images, results[0].get_response()["parameters"]["backend"])
    np.testing.assert_allclose(np.concatenate([r.as_numpy("map") for r in results]), want.maps, atol=tol.MAP_ATOL)


def test_metrics(server, images):
    c = client(server)
    c.infer("grad-cam", [image_input(images[:2])])
    with pytest.raises(Exception):
        c.infer("grad-cam", [image_input(images[:1] * 3)])  # pixels above 1: a 400
    text = requests.get(f"http://{server}/metrics", timeout=30).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['opticam_requests_total{code="200",model="grad-cam"}'] >= 1
    assert samples['opticam_errors_total{code="400",model="grad-cam"}'] >= 1
    assert samples['opticam_request_seconds_count{model="grad-cam"}'] >= 2
    assert samples['opticam_batch_size_count{model="grad-cam"}'] >= 1
    assert samples['opticam_batch_size_sum{model="grad-cam"}'] >= 2
    assert 'opticam_queue_depth{model="grad-cam"}' in samples
    assert 'opticam_batch_seconds_count{model="grad-cam"}' in samples
    assert samples["opticam_in_flight"] == 0


def test_listening_socket_gets_tcp_nodelay_connections():
    """asyncio sets TCP_NODELAY only on connections of a socket made with proto IPPROTO_TCP;
    with proto 0 each keep-alive response waited ~40 ms for the client's delayed ACK."""
    import socket

    from opticam_rt.serve.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        client = socket.create_connection(sock.getsockname())
        conn, _ = sock.accept()
        import asyncio

        async def check():
            loop = asyncio.get_running_loop()
            transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, conn)
            value = transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            transport.close()
            return value

        assert asyncio.run(check()) != 0
        client.close()
    finally:
        sock.close()


def test_forward_only_methods_on_onnx_runtime(start_server, images, library, tol):
    """Methods ``auto`` runs on ONNX Runtime (no per-size compiles: batches are not cut or padded)."""
    with start_server(methods=("score-cam", "fake-cam"), max_wait_ms=20.0) as address:
        for method in ("fake-cam", "score-cam"):
            result = client(address).infer(method, [image_input(images[:3])])
            params = result.get_response()["parameters"]
            assert params["backend"] == "ort-cpu" and params["batch_size"] == 3
            assert_matches(result, library(method, images[:3], "ort-cpu"), tol, where=method)
