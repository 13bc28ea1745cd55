"""``opticam-rt serve --ray``: the OIP service as a Ray Serve deployment, on a local Ray instance
in a private network namespace (tests/scale/conftest.py), queried with Triton's own client.

One replica (2 CPUs here): the replicas run the single-process server's app, so the protocol and
its limits are tested in tests/serve; this checks that the deployment serves the same results
as the library, batches concurrent requests, and reports ready through Ray Serve's proxy.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import tiny_runtime_net

pytest.importorskip("ray.serve", reason="needs opticam-rt[ray-serve]")
pytest.importorskip("starlette", reason="needs opticam-rt[serve]")
http = pytest.importorskip("tritonclient.http", reason="needs tritonclient[http] (the dev extra)")

#: Ray Serve's controller, proxy and the replica's warm-up, on 2 busy cores.
READY_TIMEOUT_S = 180.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def deployed(ray_cluster, tmp_path_factory):
    from ray import serve

    from opticam_rt.serve import ServeConfig
    from opticam_rt.serve.ray_deployment import APP_NAME, RayScaling, ray_application

    bundle = tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp())
    config = ServeConfig(bundle=str(bundle.path), methods=("grad-cam", "opti-cam"), backend="ort-cpu", threads=1,
                         max_wait_ms=50.0)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(ray_application(config, RayScaling(replicas=1, cpus=1)), name=APP_NAME, route_prefix="/",
                  blocking=False)
        client = http.InferenceServerClient(f"127.0.0.1:{port}", connection_timeout=30, network_timeout=120)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                if client.is_server_ready():
                    break
            except Exception:  # noqa: BLE001 - the proxy is not up yet
                pass
            assert time.monotonic() < deadline, "the Ray Serve deployment did not get ready"
            time.sleep(0.5)
        yield client, f"127.0.0.1:{port}", bundle
    finally:
        serve.shutdown()


def _infer(address, method, x, **parameters):
    """One request on its own client (a tritonclient client is not to be shared by threads)."""
    tensor = http.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    out = [http.InferRequestedOutput(n, binary_data=True) for n in ("map", "target", "score")]
    client = http.InferenceServerClient(address, connection_timeout=30, network_timeout=120)
    try:
        return client.infer(method, [tensor], outputs=out, parameters=parameters or None)
    finally:
        client.close()


def test_ray_serve_deployment_gives_the_library_results(deployed):
    from opticam_rt.runtime import Explainer

    client, address, bundle = deployed
    images = np.random.default_rng(1).random((6, 3, *tiny_runtime_net.INPUT_SIZE), dtype=np.float32)
    with Explainer(bundle, backend="ort-cpu", threads=1) as library:
        want = {m: [library.explain(images[i : i + 1], m, **({"iterations": 5} if m == "opti-cam" else {}))
                    for i in range(len(images))] for m in ("grad-cam", "opti-cam")}
    # concurrent requests, so the replica's batcher joins some of them
    with ThreadPoolExecutor(6) as pool:
        grad = list(pool.map(lambda i: _infer(address, "grad-cam", images[i : i + 1]), range(len(images))))
        opti = list(pool.map(lambda i: _infer(address, "opti-cam", images[i : i + 1], iterations=5), range(len(images))))
    for method, results in (("grad-cam", grad), ("opti-cam", opti)):
        for i, result in enumerate(results):
            np.testing.assert_allclose(result.as_numpy("map"), want[method][i].maps, atol=1e-5, rtol=0, err_msg=f"{method} {i}")
            np.testing.assert_array_equal(result.as_numpy("target"), want[method][i].targets)
            np.testing.assert_allclose(result.as_numpy("score"), want[method][i].scores, rtol=1e-5)
    assert client.is_model_ready("grad-cam") and not client.is_model_ready("score-cam")


def test_scaling_settings_map_to_ray_serve_options():
    from opticam_rt.errors import InputError
    from opticam_rt.serve import ServeConfig
    from opticam_rt.serve.ray_deployment import RayScaling, parse_autoscale

    config = ServeConfig(bundle="b", max_queue=10, max_batch=4, workers=2, request_timeout_s=30)
    fixed = RayScaling(replicas=3, cpus=2).deployment_options(config)
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 2} and fixed["max_ongoing_requests"] == 10 + 4 * 2
    scaled = RayScaling(autoscale=parse_autoscale("0:4"), target_ongoing_requests=6).deployment_options(config)
    assert scaled["autoscaling_config"] == {"min_replicas": 0, "max_replicas": 4, "initial_replicas": 1,
                                            "target_ongoing_requests": 6}
    assert "num_replicas" not in scaled
    for bad in ("4", "a:b", "3:1"):
        with pytest.raises(InputError, match="autoscale"):
            RayScaling(autoscale=parse_autoscale(bad))
