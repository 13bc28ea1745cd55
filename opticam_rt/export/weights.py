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


def share_weights(models: dict[str, onnx.ModelProto], weights_path: Path) -> dict[str, int]:
    """Move every large initializer of ``models`` into ``weights_path``, each distinct tensor once.

    Identical tensors (same dtype, shape and bytes) in different graphs point at the same
    offset. The models are modified in place; save them next to ``weights_path``.

    Returns:
        {"tensors": distinct tensors written, "references": initializers redirected,
         "bytes": size of the weights file}.
    """
    offsets: dict[tuple[int, tuple[int, ...], str], tuple[int, int]] = {}
    references = 0
    with open(weights_path, "wb") as out:
        position = 0
        for model in models.values():
            graph = model.graph
            for index, tensor in enumerate(list(graph.initializer)):
                array = numpy_helper.to_array(tensor)
                data = array.tobytes()
                if len(data) < INLINE_LIMIT_BYTES:
                    continue
                key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(data).hexdigest())
                if key not in offsets:
                    padding = (-position) % ALIGNMENT
                    out.write(b"\0" * padding)
                    position += padding
                    out.write(data)
                    offsets[key] = (position, len(data))
                    position += len(data)
                offset, length = offsets[key]
                external = onnx.TensorProto()
                external.name = tensor.name
                external.data_type = tensor.data_type
                external.dims.extend(tensor.dims)
                external.data_location = onnx.TensorProto.EXTERNAL
                for k, v in (("location", weights_path.name), ("offset", str(offset)), ("length", str(length))):
                    entry = external.external_data.add()
                    entry.key, entry.value = k, v
                graph.initializer[index].CopyFrom(external)
                references += 1
    return {"tensors": len(offsets), "references": references, "bytes": weights_path.stat().st_size}
