"""Property-based fuzzing (hypothesis) of image files and bundle manifests (issue 13).

The only outcomes allowed: a valid map, or a one-line opticam-rt error naming the file; never
another exception, and the good image beside the fuzzed one is still explained and written.

Bounded for CI: ``OPTICAM_FUZZ_EXAMPLES`` (default 150 images, 150 manifests, 60 mutated graph
files) sets the number of cases per test; the draws are derandomized so CI runs the same cases
every time. For a longer hunt: ``OPTICAM_FUZZ_EXAMPLES=3000 OPTICAM_FUZZ_RANDOM=1 pytest tests/test_fuzz_reliability.py``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tiny_runtime_net

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from opticam_rt.bundle import MANIFEST, load_bundle  # noqa: E402
from opticam_rt.errors import OpticamError  # noqa: E402

EXAMPLES = int(os.environ.get("OPTICAM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("OPTICAM_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

#: Counts of what the fuzzers saw, printed at the end of the module (pytest -s) for the notes.
SEEN: dict[str, int] = {}


def seen(kind: str) -> None:
    SEEN[kind] = SEEN.get(kind, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if SEEN:
        print("\nfuzz outcomes:", json.dumps(dict(sorted(SEEN.items()))))


@pytest.fixture(scope="module")
def explainer(tmp_path_factory):
    from opticam_rt.runtime import Explainer

    bundle = tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp())
    with Explainer(bundle, backend="ort-cpu", threads=1) as e:
        yield e


# --- image files -----------------------------------------------------------------------------

MODES = ["1", "L", "P", "RGB", "RGBA", "LA", "PA", "I;16", "I", "F", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"]
FORMATS = ["PNG", "JPEG", "TIFF", "WEBP", "BMP", "GIF", "ICO", "PPM", "TGA"]


def encode(mode: str, size: tuple[int, int], fmt: str, seed: int) -> bytes:
    """A real image file of ``mode`` and ``size`` (W, H) in ``fmt``, converted when the format refuses the mode."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    try:
        img = base.convert(mode)
    except (ValueError, OSError):
        img = base
    for candidate in (img, base):
        buffer = io.BytesIO()
        try:
            candidate.save(buffer, format=fmt)
            return buffer.getvalue()
        except (OSError, ValueError, KeyError, TypeError):
            continue
    buffer = io.BytesIO()
    base.save(buffer, format="PNG")
    return buffer.getvalue()


sizes = st.one_of(
    st.tuples(st.integers(1, 48), st.integers(1, 48)),
    st.tuples(st.integers(1, 3), st.integers(400, 3000)),  # extreme strips
    st.tuples(st.integers(400, 3000), st.integers(1, 3)),
)
valid_files = st.builds(encode, st.sampled_from(MODES), sizes, st.sampled_from(FORMATS), st.integers(0, 2**16))


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(valid_files))
    how = draw(st.sampled_from(["truncate", "flip-header", "flip-any", "splice"]))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, max(0, len(data) - 1)))])
    if how == "splice":
        at = draw(st.integers(0, len(data)))
        return bytes(data[:at] + draw(st.binary(max_size=64)) + data[at:])
    span = min(len(data), 64) if how == "flip-header" else len(data)
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, max(0, span - 1)))
        if data:
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


def png_with_header(width: int, height: int, depth: int, colour: int, idat: bytes) -> bytes:
    """A PNG whose header declares any size and pixel format, with valid checksums, and ``idat`` as its data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    palette = chunk(b"PLTE", bytes(range(48))) if colour == 3 else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + palette + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


#: Declared sizes: small enough to decode (area <= 16 megapixels), or past Pillow's bomb limit
#: (refused before any pixel is allocated); both with data that may be short or garbage.
declared_pngs = st.builds(
    png_with_header,
    st.integers(1, 4000),
    st.integers(1, 4000),
    st.sampled_from([1, 2, 4, 8, 16, 3]),
    st.sampled_from([0, 2, 3, 4, 6, 5]),
    st.one_of(st.binary(max_size=64), st.builds(lambda n: zlib.compress(b"\x00" * n), st.integers(0, 5000))),
) | st.builds(
    png_with_header,
    st.integers(10000, 60000),
    st.integers(10000, 60000),
    st.just(8),
    st.sampled_from([0, 2, 6]),
    st.builds(lambda n: zlib.compress(b"\x00" * n), st.integers(0, 100000)),
)

image_bytes = st.one_of(
    st.tuples(st.just("valid"), valid_files),
    st.tuples(st.just("declared-png"), declared_pngs),
    st.tuples(st.just("mutated"), mutated()),
    st.tuples(st.just("random"), st.binary(max_size=512)),
)
suffixes = st.sampled_from([".png", ".jpg", ".tif", ".webp", ".bmp", ".gif", "", ".npy"])


def assert_one_line_error(text: str | None, path: Path) -> None:
    assert text and "\n" not in text and str(path) in text, repr(text)


@pytest.fixture(scope="module")
def good_image(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("fuzz-good") / "good.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(path)
    return path


@FUZZ
@given(case=image_bytes, suffix=suffixes)
def test_fuzzed_image_gives_a_map_or_a_one_line_error(explainer, good_image, case, suffix) -> None:
    from opticam_rt.runtime.files import explain_files

    kind, blob = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzzed{suffix}"
        path.write_bytes(blob)
        results = explain_files(explainer, [path, good_image], "grad-cam", batch_size=2, out_dir=Path(tmp) / "out")
        fuzzed, good = results
        assert good.error is None and Path(good.record["map"]).is_file() and Path(good.record["overlay"]).is_file()
        if fuzzed.error is None:
            saliency = np.load(fuzzed.record["map"])
            assert saliency.shape == explainer.input_size and np.isfinite(saliency).all()
            assert 0 <= saliency.min() and saliency.max() <= 1
            seen(f"image {kind}: map")
        else:
            assert_one_line_error(fuzzed.error, path)
            seen(f"image {kind}: error")


# --- manifests -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def manifest_copy(tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the tiny bundle whose manifest each example rewrites, and the original manifest."""
    src = tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp()).path
    copy = tmp_path_factory.mktemp("fuzz-manifest") / "bundle"
    shutil.copytree(src, copy)
    return copy, json.loads((copy / MANIFEST).read_text())


@st.composite
def manifests(draw, original: dict) -> object:
    how = draw(st.sampled_from(["field", "field", "delete", "nested", "whole", "extra"]))
    data = json.loads(json.dumps(original))
    if how == "whole":
        return draw(json_values)
    field = draw(st.sampled_from(sorted(original)))
    if how == "field":
        data[field] = draw(json_values)
    elif how == "delete":
        del data[field]
    elif how == "extra":
        data[draw(st.text(max_size=10))] = draw(json_values)
    else:  # a value inside graphs / files / a list field
        target = draw(st.sampled_from(["graphs", "files", "input_size", "tap_shape", "mean"]))
        value = data[target]
        if isinstance(value, dict):
            key = draw(st.sampled_from(sorted(value)))
            inner = value[key]
            if isinstance(inner, dict) and draw(st.booleans()):
                inner[draw(st.sampled_from(sorted(inner)))] = draw(json_values)
            else:
                value[key] = draw(json_values)
        else:
            value[draw(st.integers(0, len(value) - 1))] = draw(json_values)
    return data


def test_manifest_fuzz(explainer, manifest_copy, good_image) -> None:
    copy, original = manifest_copy
    from opticam_rt.images import load_image
    from opticam_rt.runtime import Explainer

    pixels = load_image(good_image, explainer.input_size).pixels[None]

    @FUZZ
    @given(data=manifests(original))
    def check(data) -> None:
        (copy / MANIFEST).write_text(json.dumps(data))
        try:
            with Explainer(copy, backend="ort-cpu", threads=1) as e:
                maps = e.explain(pixels, "grad-cam").maps
        except OpticamError as exc:
            assert "\n" not in str(exc) and str(copy) in str(exc), str(exc)
            seen("manifest: error")
            return
        assert np.isfinite(maps).all() and maps.shape == (1, *explainer.input_size)
        seen("manifest: map")

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fuzzed "verification" may ask for a warning
        check()
    (copy / MANIFEST).write_text(json.dumps(original))


# --- boxes files -----------------------------------------------------------------------------

coordinates = st.one_of(
    st.integers(-50, 80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["inf", "-inf", "nan", "1e300", "-1e300", "1e-300", "9" * 400, "", " ", "0x10", "1_0", "½", "3.5e2"]),
    st.text(max_size=8),
)


def test_boxes_file_fuzz(explainer, good_image, tmp_path) -> None:
    """A boxes CSV of arbitrary coordinates: the file loads or fails in one line naming it, and
    each image is then scored or skipped with a one-line error naming the CSV and its line
    (issue 21, defect 4: inf was OverflowError, an empty box stopped the run)."""
    import csv

    from opticam_rt.evaluation.datasets import load_csv
    from opticam_rt.evaluation.runner import EvaluationBatch, EvaluationSettings, evaluate_batch

    images = [good_image, tmp_path / "second.png"]
    shutil.copy(good_image, images[1])
    boxes = tmp_path / "boxes.csv"

    plausible = st.builds(lambda x, y, w, h: [str(x), str(y), str(x + w), str(y + h)],
                          st.integers(-5, 45), st.integers(-5, 35), st.integers(0, 50), st.integers(0, 40))
    boxes_of = st.one_of(plausible, st.lists(coordinates, min_size=4, max_size=4))

    @settings(FUZZ, max_examples=max(10, EXAMPLES * 2 // 5))
    @given(rows=st.lists(st.tuples(st.integers(0, 1), boxes_of), min_size=1, max_size=4))
    def check(rows) -> None:
        with boxes.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "x0", "y0", "x1", "y1"])
            for which, values in rows:
                writer.writerow([str(images[which]), "", *values])
        try:
            samples = load_csv(boxes)
        except OpticamError as exc:
            assert "\n" not in str(exc) and str(boxes) in str(exc), str(exc)
            seen("boxes: file refused")
            return
        outcome = evaluate_batch(explainer, EvaluationBatch("grad-cam", samples), ["om"], EvaluationSettings())
        for image, message in outcome.errors:
            assert "\n" not in message and f"{boxes}:" in message and len(message) < 400, message
            seen("boxes: image skipped")
        for record in outcome.records:
            assert record["OM"] in (0.0, 100.0) or record.get("OM") is None, record
            seen("boxes: scored")
        assert len(outcome.errors) + len(outcome.records) == len(samples)

    check()


# --- model code named by a manifest ----------------------------------------------------------


def test_manifest_code_fuzz(manifest_copy, tmp_path, monkeypatch) -> None:
    """Whatever ``model_spec``/``model_name`` a manifest names, the torch backend imports nothing
    unless trusted: a one-line error (UntrustedCodeError, or the schema refusing the value) and the
    payload never runs (issue 21, defect 1)."""
    from opticam_rt.errors import UntrustedCodeError
    from opticam_rt.runtime import Explainer

    monkeypatch.delenv("OPTICAM_RT_TRUST_BUNDLE_CODE", raising=False)
    copy, original = manifest_copy
    marker = tmp_path / "payload-ran"
    (copy / "payload.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef make():\n    raise SystemExit\n")
    payload = str(copy / "payload.py")
    specs = st.one_of(
        st.sampled_from([f"{payload}:make", "payload.py:make", f"./{Path(payload).name}:make", f"{payload}:",
                         "tiny_runtime_net:make", "os:getcwd", "antigravity:fly", f"{payload}:make\n", ":make"]),
        st.builds(lambda pre, post: f"{pre}{payload}:{post}", st.text(max_size=3), st.text(max_size=5)),
        st.text(max_size=40),
    )

    @settings(FUZZ, max_examples=max(10, EXAMPLES * 2 // 5))
    @given(spec=specs, field=st.sampled_from(["model_spec", "model_name", "both"]))
    def check(spec, field) -> None:
        data = json.loads(json.dumps(original))
        if field in ("model_spec", "both"):
            data["model_spec"] = spec
        if field in ("model_name", "both"):
            data["model_name"] = spec
            if field == "model_name":
                data["model_spec"] = None
        (copy / MANIFEST).write_text(json.dumps(data))
        try:
            with Explainer(copy, backend="torch", threads=1):
                pass
            # only a built-in name may load without the user's word
            assert (data["model_spec"] or data["model_name"]) == "efficientnet-lite0", spec
            seen("manifest code: built-in")
        except UntrustedCodeError as exc:
            assert "\n" not in str(exc) and str(copy) in str(exc), str(exc)
            seen("manifest code: refused")
        except OpticamError as exc:
            assert "\n" not in str(exc), str(exc)
            seen("manifest code: other error")
        assert not marker.exists(), f"manifest code {spec!r} was imported"

    check()
    (copy / MANIFEST).write_text(json.dumps(original))
    (copy / "payload.py").unlink()


# --- graph files with a matching hash --------------------------------------------------------


def test_graph_file_fuzz(manifest_copy) -> None:
    """A graph file replaced (manifest rehashed, so the hash check passes) loads and runs, or fails in one line."""
    import hashlib

    from opticam_rt.runtime import Explainer

    copy, original = manifest_copy
    names = sorted(original["graphs"].values())
    pristine = {n: (copy / n).read_bytes() for n in names}

    @settings(FUZZ, max_examples=max(10, EXAMPLES * 2 // 5))
    @given(name=st.sampled_from(names), blob=st.binary(max_size=256), keep=st.integers(0, 4000), mode=st.booleans())
    def check(name, blob, keep, mode) -> None:
        data = pristine[name][:keep] + blob if mode else blob
        (copy / name).write_bytes(data)
        manifest = json.loads(json.dumps(original))
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        (copy / MANIFEST).write_text(json.dumps(manifest))
        try:
            load_bundle(copy)
            with Explainer(copy, backend="ort-cpu", threads=1) as e:  # loaded: it must then run, or fail in one line
                e.predict(np.zeros((1, 3, *e.input_size), np.float32))
            seen("graph: loaded and ran")
        except OpticamError as exc:
            assert "\n" not in str(exc) and name in str(exc), str(exc)
            seen("graph: error")
        finally:
            (copy / name).write_bytes(pristine[name])

    check()
    (copy / MANIFEST).write_text(json.dumps(original))
