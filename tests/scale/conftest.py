"""The Ray tests' shared pieces: one local Ray cluster for all of them (2 CPUs, node address 127.0.0.1,
no dashboard), the tiny bundle, sample photos plus one unreadable file, and the tolerance.

Starting Ray takes 10-20 s on 2 cores, so every test here shares the one cluster (module scope:
the Ray tests live in one module, and Ray's daemons stop as soon as it is done).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import tiny_runtime_net

#: Ray against one process on the same batches: the same ONNX Runtime graphs on the same inputs,
#: only the thread count differs (1 per actor vs the default); bit-identical results were seen,
#: float32 rounding is allowed for.
RECORD_RTOL = 1e-5
RECORD_ATOL = 1e-6

#: Bounds on every Ray run in the tests: actors must start, and each batch finish, within these.
START_TIMEOUT_S = 180.0
BATCH_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance for the module's tests; yields the ray module."""
    ray = pytest.importorskip("ray", reason="needs opticam-rt[ray]")
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def ray_config():
    """``ray_config(**fields)`` -> a RayConfig with 2 actors on ONNX Runtime CPU and the bounds above."""
    from opticam_rt.scale import RayConfig

    def make(**fields):
        base = dict(actors=2, backend="ort-cpu", start_timeout_s=START_TIMEOUT_S, batch_timeout_s=BATCH_TIMEOUT_S)
        return RayConfig(**{**base, **fields})

    return make


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp()).path)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image's four colour photos as PNG files, and ``broken.png`` (not an image)."""
    from opticam_rt.images import write_sample_photos

    folder = tmp_path_factory.mktemp("scale-photos")
    if len(write_sample_photos(folder, extended=False)) < 3:
        pytest.skip("needs scikit-image's sample photos")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="session")
def same_records():
    """:func:`assert_same_records`."""
    return assert_same_records


def assert_same_records(got: list[dict], expected: list[dict]) -> None:
    """The same (method, image) records, each exactly once, with equal values (floats to the
    tolerance above, everything else exactly)."""
    import numpy as np

    keys = [(r["method"], r["image"]) for r in got]
    assert len(keys) == len(set(keys)), f"records counted twice: {sorted(k for k in keys if keys.count(k) > 1)}"
    by_key = {(r["method"], r["image"]): r for r in got}
    want = {(r["method"], r["image"]): r for r in expected}
    assert by_key.keys() == want.keys(), f"missing {want.keys() - by_key.keys()}, extra {by_key.keys() - want.keys()}"
    for key, record in want.items():
        assert by_key[key].keys() == record.keys(), key
        for field, value in record.items():
            if isinstance(value, (float, list)):
                np.testing.assert_allclose(by_key[key][field], value, rtol=RECORD_RTOL, atol=RECORD_ATOL,
                                           err_msg=f"{key} {field}")
            else:
                assert by_key[key][field] == value, (key, field)
