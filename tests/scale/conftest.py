"""The Ray tests' shared pieces: one local Ray cluster for all of them (2 CPUs, node address 127.0.0.1,
no dashboard) inside a private network namespace, the tiny bundle, sample photos plus one
unreadable file, and the tolerance.

Starting Ray takes 10-20 s on 2 cores, so every test here shares the one cluster (module scope:
the Ray tests live in one module, and Ray's daemons stop as soon as it is done).

Why a private network namespace: the tests' servers must be reachable from this machine only,
and Ray 2.60 both probes a public DNS address (8.8.8.8:53) to find its node IP and, on some
setups, listens on every interface. The test thread moves into a new network namespace holding
only loopback before ``ray.init``; every Ray process inherits it, so nothing Ray opens is
reachable from outside and nothing it sends leaves the machine. The thread moves back after
``ray.shutdown``. Where the namespace cannot be made (no CAP_SYS_ADMIN), the tests skip.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import pytest

#: Ray against one process on the same batches: the same ONNX Runtime graphs on the same inputs,
#: only the thread count differs (1 per actor vs the default); bit-identical results were seen,
#: float32 rounding is allowed for.
RECORD_RTOL = 1e-5
RECORD_ATOL = 1e-6

#: Bounds on every Ray run in the tests: actors must start, and each batch finish, within these.
START_TIMEOUT_S = 180.0
BATCH_TIMEOUT_S = 120.0


CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def private_network() -> Iterator[None]:
    """Run the calling thread (and every process it starts) in a new network namespace with only
    loopback up; return it to its namespace afterwards. Skips the test where that is not allowed."""
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            pytest.skip(f"the Ray tests need a private network namespace (unshare: {os.strerror(ctypes.get_errno())})")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True, timeout=30)
            yield
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original network namespace failed")
    finally:
        os.close(original)


@pytest.fixture
def loopback_only():
    """The test runs (and every process it starts) in a private network namespace, loopback only."""
    with private_network():
        yield


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance for the module's tests, in a private network namespace; yields the ray module."""
    ray = pytest.importorskip("ray", reason="needs opticam-rt[ray]")
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    with private_network():
        yield from _ray_instance(ray)


def _ray_instance(ray):
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
