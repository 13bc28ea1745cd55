"""OIP (KServe v2 / Triton) infer requests and responses of one explanation model.

Request inputs: ``image`` FP32 (N, 3, H, W) in [0, 1] at the bundle's input size, or BYTES (N,)
encoded image files (decoded and resized as ``explain`` does); optional ``target`` INT64 (N,)
class indices (top-1 without it). Request ``parameters`` are the method's options, typed as on
the CLI (a string such as "5" is read as the CLI would read the flag), besides the protocol's
own (``binary_data_output``, ``timeout`` in microseconds; ``priority``, ``sequence_*`` and
``headers`` are ignored). Response outputs: ``map`` FP32 (N, H, W), ``target`` INT64 (N,),
``score`` FP32 (N,) and ``masked_score`` FP32 (N,).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.methods import REGISTRY
from opticam_rt.serve.errors import ServeError, bad_request, too_large
from opticam_rt.serve.tensors import binary_size, check_header, decode_bytes, decode_numeric, encode_tensor

#: Output name -> datatype, in response order.
OUTPUTS = {"map": "FP32", "target": "INT64", "score": "FP32", "masked_score": "FP32"}
#: Request parameters of the protocol itself, not method options.
PROTOCOL_PARAMETERS = ("binary_data_output", "timeout", "priority", "sequence_id", "sequence_start", "sequence_end", "headers")


@dataclass
class InferRequest:
    """A parsed infer request: ``pixels`` (N, 3, H, W) float32 (FP32 input) or ``encoded`` (N
    encoded image files, BYTES input); ``targets`` (N,) int64 or None (top-1); ``options`` the
    method's, checked; ``outputs`` the (name, binary) pairs to return; ``timeout_s`` the
    caller's own limit, if any."""

    id: str | None
    pixels: np.ndarray | None
    encoded: list[bytes] | None
    targets: np.ndarray | None
    options: dict[str, Any]
    outputs: list[tuple[str, bool]] = field(default_factory=list)
    timeout_s: float | None = None

    @property
    def count(self) -> int:
        return len(self.pixels) if self.pixels is not None else len(self.encoded or ())


def parse_infer_request(
    body: bytes, header_length: int | None, method: str, input_size: tuple[int, int], num_classes: int, max_images: int
) -> InferRequest:
    """Parse and check an infer request body (JSON, or JSON header + binary tensors).

    Raises:
        ServeError: 400 naming the field at fault; 413 for more than ``max_images`` images.
    """
    header, rest = _split(body, header_length)
    try:
        request = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"request body is not valid JSON ({exc})") from None
    if not isinstance(request, dict):
        raise bad_request("request body must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad_request("request needs an 'inputs' list (with an 'image' tensor)")
    params = request.get("parameters", {})
    if not isinstance(params, dict):
        raise bad_request("request 'parameters' must be a JSON object")
    tensors = _read_tensors(inputs, rest)
    if "image" not in tensors:
        raise bad_request(f"request has no 'image' input (got {', '.join(tensors)})")
    pixels, encoded = _image(tensors["image"], input_size, max_images)
    n = len(pixels) if pixels is not None else len(encoded)  # type: ignore[arg-type]
    targets = _targets(tensors["target"], n, num_classes) if "target" in tensors else None
    request_id = request.get("id")
    return InferRequest(
        id=None if request_id is None else str(request_id),
        pixels=pixels,
        encoded=encoded,
        targets=targets,
        options=parse_options(method, {k: v for k, v in params.items() if k not in PROTOCOL_PARAMETERS}),
        outputs=_outputs(request.get("outputs"), bool(params.get("binary_data_output", False))),
        timeout_s=_timeout(params.get("timeout")),
    )


def _split(body: bytes, header_length: int | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if header_length > len(body):
        raise bad_request(f"Inference-Header-Content-Length is {header_length}, but the body has only {len(body)} bytes")
    return body[:header_length], body[header_length:]


def _read_tensors(inputs: list[Any], rest: bytes) -> dict[str, tuple[dict[str, Any], list[int], str, bytes | None]]:
    """name -> (tensor JSON, shape, datatype, its binary bytes or None), the binary parts cut
    from ``rest`` in input order; every byte of ``rest`` must belong to a tensor."""
    tensors = {}
    at = 0
    for i, tensor in enumerate(inputs):
        name, shape, datatype = check_header(tensor, f"inputs[{i}]")
        if name in tensors:
            raise bad_request(f"input {name!r} is given twice")
        if name not in ("image", "target"):
            raise bad_request(f"unknown input {name!r}; inputs are 'image' and 'target'")
        size = binary_size(tensor, f"input {name!r}")
        raw = None
        if size is not None:
            if at + size > len(rest):
                raise bad_request(
                    f"input {name!r}: binary data truncated: binary_data_size {size} at offset {at}, "
                    f"but only {len(rest) - at} bytes follow the JSON header"
                )
            raw, at = rest[at : at + size], at + size
        tensors[name] = (tensor, shape, datatype, raw)
    if at != len(rest):
        raise bad_request(f"{len(rest) - at} bytes after the JSON header belong to no input (check binary_data_size)")
    return tensors


def _image(entry: tuple[dict[str, Any], list[int], str, bytes | None], input_size: tuple[int, int], max_images: int):
    tensor, shape, datatype, raw = entry
    h, w = input_size
    if datatype == "BYTES":
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise bad_request(f"input 'image' as BYTES must have shape [N] (encoded image files), got {shape}")
        _check_count(shape[0], max_images)
        return None, decode_bytes(tensor, raw, "image", shape)
    if datatype != "FP32":
        raise bad_request(f"input 'image' must be FP32 [N, 3, {h}, {w}] pixels in [0, 1] or BYTES [N] image files, got {datatype}")
    if len(shape) != 4 or shape[1:] != [3, h, w]:
        raise bad_request(f"input 'image' must have shape [N, 3, {h}, {w}] (this model's input size), got {shape}")
    _check_count(shape[0], max_images)
    pixels = decode_numeric(tensor, raw, "image", shape, "FP32")
    check_pixels(pixels)
    return pixels, None


def _check_count(n: int, max_images: int) -> None:
    if n < 1:
        raise bad_request("input 'image' holds no image (N = 0)")
    if n > max_images:
        raise too_large(f"input 'image' holds {n} images; this server takes at most {max_images} per request")


def check_pixels(pixels: np.ndarray) -> None:
    """(N, 3, H, W) float32 must be finite and in [0, 1]; 400 naming the first bad image otherwise."""
    flat = pixels.reshape(len(pixels), -1)
    bad = ~(np.isfinite(flat).all(axis=1) & (flat.min(axis=1) >= 0) & (flat.max(axis=1) <= 1.0 + 1e-6))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        row = flat[i]
        what = "NaN or infinite pixels" if not np.isfinite(row).all() else f"pixels in {row.min():.3g}..{row.max():.3g}"
        raise bad_request(f"input 'image': image {i} has {what}; pixels must be finite and in [0, 1] (divide 0..255 data by 255)")


def _targets(entry: tuple[dict[str, Any], list[int], str, bytes | None], n: int, num_classes: int) -> np.ndarray:
    tensor, shape, datatype, raw = entry
    if datatype not in ("INT64", "INT32"):
        raise bad_request(f"input 'target' must be INT64 class indices, got {datatype}")
    if shape != [n]:
        raise bad_request(f"input 'target' must have shape [{n}] (one class per image), got {shape}")
    targets = decode_numeric(tensor, raw, "target", shape, datatype).astype(np.int64)
    bad = (targets < 0) | (targets >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise bad_request(f"input 'target': class {targets[i]} of image {i} is out of range: the model has classes 0..{num_classes - 1}")
    return targets


def parse_options(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """Request parameters -> the method's options, checked by its declaration (as the CLI's flags
    are); a string is first read as the CLI reads a flag. 400 naming the option otherwise."""
    infos = {info.name: info for info in REGISTRY[method].Options.infos()}
    typed = {}
    for name, value in given.items():
        info = infos.get(name)
        if info is not None and isinstance(value, str) and info.kind in (int, float):
            try:
                value = info.kind(value)
            except ValueError:
                raise bad_request(f"{method} option {name} must be {'an integer' if info.kind is int else 'a number'}, got {value!r}") from None
        typed[name] = value
    try:
        return REGISTRY[method].Options.parse(typed, method).as_dict()
    except InputError as exc:
        raise bad_request(str(exc)) from None


def _outputs(requested: Any, binary_default: bool) -> list[tuple[str, bool]]:
    if requested is None:
        return [(name, binary_default) for name in OUTPUTS]
    if not isinstance(requested, list):
        raise bad_request("request 'outputs' must be a list")
    out = []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in OUTPUTS:
            raise bad_request(f"unknown output {name!r}; outputs are {', '.join(OUTPUTS)}")
        params = item.get("parameters", {})
        binary = params.get("binary_data", binary_default) if isinstance(params, dict) else binary_default
        out.append((name, bool(binary)))
    return out


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise bad_request(f"request parameter 'timeout' must be a positive number of microseconds, got {value!r}")
    return float(value) / 1e6


def encode_response(
    model: str, request: InferRequest, values: dict[str, np.ndarray], parameters: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON, or JSON header + binary outputs (with the
    ``Inference-Header-Content-Length`` header) when any requested output is binary.

    ``values``: map (N, H, W), target (N,), score (N,), masked_score (N,).
    """
    entries, raws = [], []
    for name, binary in request.outputs:
        entry, raw = encode_tensor(name, values[name], OUTPUTS[name], binary)
        entries.append(entry)
        if raw is not None:
            raws.append(raw)
    response: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": entries, "parameters": parameters}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not raws:
        return header, {"content-type": "application/json"}
    return b"".join([header, *raws]), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


def model_metadata(method: str, input_size: tuple[int, int], backend: str, max_batch: int) -> dict[str, Any]:
    """GET /v2/models/{method}: the OIP metadata (inputs, outputs, shapes, datatypes), with the
    method's options and the image encodings accepted under ``parameters``."""
    h, w = input_size
    options = {
        info.name: {"type": info.kind.__name__, "default": info.default, "help": info.spec.help,
                    **({"choices": list(info.spec.choices)} if info.spec.choices else {})}
        for info in REGISTRY[method].Options.infos()
    }
    return {
        "name": method,
        "versions": ["1"],
        "platform": "opticam-rt",
        "inputs": [
            {"name": "image", "datatype": "FP32", "shape": [-1, 3, h, w]},
            {"name": "target", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [{"name": name, "datatype": dt, "shape": [-1, h, w] if name == "map" else [-1]} for name, dt in OUTPUTS.items()],
        "parameters": {
            "image": f"FP32 [N, 3, {h}, {w}] pixels in [0, 1], or BYTES [N] encoded image files (base64 strings in JSON)",
            "target": "optional; top-1 class per image without it",
            "backend": backend,
            "max_batch": max_batch,
            "options": options,
        },
    }


def error_body(error: ServeError) -> bytes:
    """The OIP error body ``{"error": "..."}``."""
    return json.dumps({"error": error.message}).encode()
