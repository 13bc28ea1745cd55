"""Store the initializers of several ONNX graphs once, in one shared external-data file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx import numpy_helper

#: Initializers smaller than this stay inside their graph (shapes, scalars, small constants).
INLINE_LIMIT_BYTES = 1024
#: Offsets in the weights file are aligned so runtimes can memory-map tensors directly.
ALIGNMENT = 64


class SharedWeights:
    """An open weights file that graphs are added to one at a time, as they are exported.

    Each added graph's large initializers are written (each distinct tensor once) and replaced
    by external-data references at once, so an export holds the weights in memory once rather
    than once per graph (VGG-16: 528 MB per graph; docs/models.md).
    """

    def __init__(self, weights_path: Path) -> None:
        self.path = weights_path
        self.file = open(weights_path, "wb")  # noqa: SIM115 - closed by close()
        self.position = 0
        self.offsets: dict[tuple[int, tuple[int, ...], str], tuple[int, int]] = {}
        self.references = 0

    def add(self, model: onnx.ModelProto) -> None:
        """Move ``model``'s initializers of at least ``INLINE_LIMIT_BYTES`` into the file (in place)."""
        graph = model.graph
        for index, tensor in enumerate(list(graph.initializer)):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                continue
            array = numpy_helper.to_array(tensor)
            data = array.tobytes()
            if len(data) < INLINE_LIMIT_BYTES:
                continue
            key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(data).hexdigest())
            if key not in self.offsets:
                padding = (-self.position) % ALIGNMENT
                self.file.write(b"\0" * padding)
                self.position += padding
                self.file.write(data)
                self.offsets[key] = (self.position, len(data))
                self.position += len(data)
            offset, length = self.offsets[key]
            external = onnx.TensorProto()
            external.name = tensor.name
            external.data_type = tensor.data_type
            external.dims.extend(tensor.dims)
            external.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", self.path.name), ("offset", str(offset)), ("length", str(length))):
                entry = external.external_data.add()
                entry.key, entry.value = k, v
            graph.initializer[index].CopyFrom(external)
            self.references += 1

    def close(self) -> dict[str, int]:
        """Close the file; {"tensors": distinct tensors written, "references": initializers
        redirected, "bytes": size of the weights file}."""
        self.file.close()
        return {"tensors": len(self.offsets), "references": self.references, "bytes": self.path.stat().st_size}


def share_weights(models: dict[str, onnx.ModelProto], weights_path: Path) -> dict[str, int]:
    """Move every large initializer of ``models`` into ``weights_path``, each distinct tensor once.

    Identical tensors (same dtype, shape and bytes) in different graphs point at the same
    offset. The models are modified in place; save them next to ``weights_path``.

    Returns:
        {"tensors": distinct tensors written, "references": initializers redirected,
         "bytes": size of the weights file}.
    """
    shared = SharedWeights(weights_path)
    try:
        for model in models.values():
            shared.add(model)
    finally:
        stats = shared.close()
    return stats
