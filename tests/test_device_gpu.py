"""The device-resident split pipeline (CuPy kernels + IOBinding on ort-cuda); skipped without a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from opticam_rt.runtime.device import cupy_or_none

pytestmark = pytest.mark.gpu


def _cuda_ready() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return cupy_or_none() is not None and "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.mark.skipif(not _cuda_ready(), reason="needs CuPy, a CUDA GPU and onnxruntime-gpu")
def test_split_on_device_matches_cpu_fused(tmp_path: Path) -> None:
    from opticam_rt.export import export_bundle
    from opticam_rt.runtime import Explainer
    from tests.nets import TINY_NETS

    net = TINY_NETS["conv"]
    export_bundle(net.build(), tmp_path / "b", tap=net.tap, input_size=net.input_size, mean=net.mean, std=net.std, verify=False)
    images = np.random.default_rng(0).random((3, 3, *net.input_size), dtype=np.float32)
    with Explainer(tmp_path / "b", backend="ort-cpu") as cpu, Explainer(tmp_path / "b", backend="ort-cuda") as gpu:
        want = cpu.explain(images, "opti-cam", iterations=5, pipeline="fused")
        got = gpu.explain(images, "opti-cam", iterations=5, pipeline="split")
    np.testing.assert_allclose(got.trace[:, 0], want.trace[:, 0], rtol=1e-4)
    for a, b in zip(got.maps, want.maps):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
