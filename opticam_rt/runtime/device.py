"""Device-resident inference: ONNX Runtime IOBinding on CuPy buffers (no host copies per call).

Used by the split Opti-CAM pipeline on ``ort-cuda``: the CuPy kernels write the masked images
into device memory, the grad_image graph reads them and writes its outputs into preallocated
CuPy buffers, and the adjoint kernel reads those; nothing crosses to the host inside the loop.
ONNX Runtime is given CuPy's current stream (``user_compute_stream``) so kernels and graph
runs are ordered on one stream without synchronising the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from opticam_rt.bundle import GRAPH_SIGNATURES
from opticam_rt.errors import BackendUnavailableError


def cupy_or_none() -> Any:
    """The cupy module when it imports and a GPU is visible, else None."""
    try:
        import cupy
    except ImportError:
        return None
    try:
        return cupy if cupy.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA install means "no device path"
        return None


class DeviceBinding:
    """Run one graph of an ``ort-cuda`` session on CuPy arrays through IOBinding.

    Output buffers are allocated once per batch size and reused, so a fixed-shape loop does
    no allocation after its first step.
    """

    def __init__(self, runner: Any, graph: str) -> None:
        self.cp = cupy_or_none()
        if self.cp is None:
            raise BackendUnavailableError("the device-resident pipeline needs CuPy and a CUDA GPU: pip install 'opticam-rt[gpu]'")
        if runner.providers[0] not in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            raise BackendUnavailableError(f"backend {runner.name!r} has no CUDA device for IOBinding")
        stream = self.cp.cuda.get_current_stream().ptr
        self.session = runner.session(graph, cuda_stream=stream)
        self.graph = graph
        self.outputs: dict[tuple[str, tuple[int, ...]], Any] = {}
        self.output_shapes = {o.name: o.shape for o in self.session.get_outputs()}

    def _output(self, name: str, batch: int, like: dict[str, Any]) -> Any:
        shape = tuple(batch if (isinstance(d, str) or d is None) else int(d) for d in self.output_shapes[name])
        key = (name, shape)
        if key not in self.outputs:
            self.outputs[key] = self.cp.empty(shape, dtype=self.cp.float32)
        return self.outputs[key]

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """feeds: name -> C-contiguous float32 CuPy arrays; returns CuPy outputs (reused buffers)."""
        binding = self.session.io_binding()
        device_id = self.cp.cuda.Device().id
        batch = len(next(iter(feeds.values())))
        for name, array in feeds.items():
            array = self.cp.ascontiguousarray(array, dtype=self.cp.float32)
            binding.bind_input(name, "cuda", device_id, np.float32, list(array.shape), array.data.ptr)
        out = {}
        for name in GRAPH_SIGNATURES[self.graph][1]:
            buf = self._output(name, batch, feeds)
            binding.bind_output(name, "cuda", device_id, np.float32, list(buf.shape), buf.data.ptr)
            out[name] = buf
        self.session.run_with_iobinding(binding)
        return out
