"""Open Inference Protocol tensors: one tensor from its JSON ``data`` or its binary bytes, and back.

The binary tensor extension sends a tensor's bytes after the JSON header instead of as JSON
numbers: the tensor's ``parameters.binary_data_size`` gives its length, the
``Inference-Header-Content-Length`` header the JSON header's. Numbers are little-endian, row
major; a BYTES tensor is each element as a 4-byte little-endian length then its bytes. In JSON,
a BYTES element is a string: base64 of the bytes here (an encoded image is not UTF-8 text).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from typing import Any

import numpy as np

from opticam_rt.serve.errors import bad_request

#: OIP datatype -> little-endian NumPy dtype (BYTES is handled apart).
DTYPES = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
DATATYPES = (*DTYPES, "BYTES")


def check_header(tensor: Any, where: str) -> tuple[str, list[int], str]:
    """A request tensor's (name, shape, datatype), each checked; 400 naming the field otherwise."""
    if not isinstance(tensor, dict):
        raise bad_request(f"{where} must be a JSON object, got {type(tensor).__name__}")
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str):
        raise bad_request(f"{where}: 'name' must be a string")
    where = f"input {name!r}"
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise bad_request(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}")
    if datatype not in DATATYPES:
        raise bad_request(f"{where}: unknown datatype {datatype!r}; OIP datatypes are {', '.join(DATATYPES)}")
    params = tensor.get("parameters", {})
    if not isinstance(params, dict):
        raise bad_request(f"{where}: 'parameters' must be a JSON object")
    return name, shape, datatype


def binary_size(tensor: dict[str, Any], where: str) -> int | None:
    """The tensor's ``binary_data_size`` (None when its data is JSON)."""
    size = tensor.get("parameters", {}).get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise bad_request(f"{where}: binary_data_size must be a non-negative integer, got {size!r}")
    return size


def decode_numeric(tensor: dict[str, Any], raw: bytes | None, name: str, shape: list[int], datatype: str) -> np.ndarray:
    """A numeric tensor of ``shape`` from ``raw`` bytes (binary) or its JSON ``data`` (flat or nested)."""
    dtype = DTYPES[datatype]
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise bad_request(
                f"input {name!r}: binary_data_size is {len(raw)} bytes, but shape {shape} of {datatype} needs {count * dtype.itemsize}"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    if "data" not in tensor:
        raise bad_request(f"input {name!r}: no 'data' and no binary_data_size")
    try:
        arr = np.asarray(tensor["data"])
    except ValueError:
        raise bad_request(f"input {name!r}: 'data' is not a rectangular list of numbers") from None
    allowed = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}[dtype.kind]
    if arr.size and arr.dtype.kind not in allowed:
        raise bad_request(f"input {name!r}: 'data' holds {arr.dtype.kind!r}-kind values, not {datatype} numbers")
    if arr.size != count:
        raise bad_request(f"input {name!r}: 'data' has {arr.size} values, shape {shape} needs {count}")
    return arr.astype(dtype).reshape(shape)


def decode_bytes(tensor: dict[str, Any], raw: bytes | None, name: str, shape: list[int]) -> list[bytes]:
    """A BYTES tensor's elements, flattened: from length-prefixed binary, or base64 JSON strings."""
    count = math.prod(shape)
    if raw is not None:
        items, at = [], 0
        while at < len(raw):
            if at + 4 > len(raw):
                raise bad_request(f"input {name!r}: BYTES data ends inside an element's 4-byte length")
            (n,) = struct.unpack_from("<I", raw, at)
            if at + 4 + n > len(raw):
                raise bad_request(f"input {name!r}: BYTES element {len(items)} declares {n} bytes, {len(raw) - at - 4} remain")
            items.append(raw[at + 4 : at + 4 + n])
            at += 4 + n
    else:
        data = tensor.get("data")
        if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
            raise bad_request(f"input {name!r}: BYTES 'data' must be a flat list of base64 strings")
        try:
            items = [base64.b64decode(s, validate=True) for s in data]
        except (binascii.Error, ValueError):
            raise bad_request(f"input {name!r}: BYTES 'data' element is not base64") from None
    if len(items) != count:
        raise bad_request(f"input {name!r}: {len(items)} BYTES elements, shape {shape} needs {count}")
    return items


def encode_tensor(name: str, value: np.ndarray, datatype: str, binary: bool) -> tuple[dict[str, Any], bytes | None]:
    """An output tensor as its JSON entry and, when ``binary``, its bytes (sent after the header)."""
    arr = np.ascontiguousarray(value, dtype=DTYPES[datatype])
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
    if binary:
        raw = arr.tobytes()
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw
    entry["data"] = arr.ravel().tolist()
    return entry, None
