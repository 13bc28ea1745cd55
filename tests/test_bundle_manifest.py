"""Issue 13, defects 8 and 9: manifest.json is validated, graphs are checked against it at load, and a
bundle whose verification failed or was interrupted says so."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import pytest
import tiny_runtime_net

from opticam_rt.bundle import MANIFEST, load_bundle
from opticam_rt.errors import BundleError, UnverifiedBundleWarning


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp()).path


@pytest.fixture
def bundle(tiny_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_dir, copy)
    return copy


def edit(bundle: Path, change) -> None:
    data = json.loads((bundle / MANIFEST).read_text())
    data = change(data) or data
    (bundle / MANIFEST).write_text(json.dumps(data))


def one_line_error(bundle: Path) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    text = str(info.value)
    assert "\n" not in text and str(bundle) in text
    return text


def rehash(bundle: Path, data: dict, name: str) -> None:
    blob = (bundle / name).read_bytes()
    data["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}


def test_empty_files_does_not_switch_hash_checks_off(bundle) -> None:
    """Defect 8: `"files": {}` loaded without checking a single hash."""
    edit(bundle, lambda d: d.update(files={}))
    assert "has no sha256" in one_line_error(bundle)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("input_size", [64, 64], "'image' of graph"),  # graphs say 32 x 32
        ("num_classes", 9, "class_names"),  # 7 names
        ("input_size", "abc", "field 'input_size' must be a list of 2 integers"),
        ("input_size", [0, -5], "field 'input_size'"),
        ("std", [0.25, 0, 0.25], "must not contain 0"),
        ("tap_shape", [8, 8], "field 'tap_shape'"),
        ("graphs", {"forward": "../forward.onnx"}, "graph 'grad_features' is not listed"),
        ("opset", "18", "field 'opset'"),
    ],
)
def test_changed_or_malformed_field_is_one_line(bundle, field, value, needle) -> None:
    """Defect 8: a changed input_size, a malformed field: a traceback from deep inside before."""
    edit(bundle, lambda d: d.update({field: value}))
    assert needle in one_line_error(bundle)


def test_changed_num_classes_is_caught_by_the_graphs(bundle) -> None:
    """Defect 8: a changed num_classes (with matching class names) was ignored."""
    edit(bundle, lambda d: d.update(num_classes=9, class_names=[f"c{i}" for i in range(9)]))
    assert "'logits'" in one_line_error(bundle)


@pytest.mark.parametrize("text", ["[]", "42", '"manifest"', "null", "[" * 100000], ids=["list", "int", "str", "null", "deep"])
def test_manifest_that_is_not_an_object(bundle, text) -> None:
    (bundle / MANIFEST).write_text(text)
    one_line_error(bundle)


def test_garbage_onnx_with_matching_hash(bundle) -> None:
    """Defect 9: garbage in forward.onnx with the manifest rehashed gave InvalidProtobuf on first use."""
    (bundle / "forward.onnx").write_bytes(b"\x08\x07garbage, not a protobuf at all \xff\xff\xff")
    edit(bundle, lambda d: rehash(bundle, d, "forward.onnx"))
    assert "forward.onnx" in one_line_error(bundle)


def test_swapped_graph_with_matching_hash(bundle) -> None:
    """A valid ONNX file of another graph under forward's name is refused by its inputs/outputs."""
    shutil.copy(bundle / "head.onnx", bundle / "forward.onnx")
    edit(bundle, lambda d: rehash(bundle, d, "forward.onnx"))
    assert "inputs ['features']" in one_line_error(bundle)


def test_extra_listed_graph_is_validated_too(bundle) -> None:
    """Graphs beyond the core ones (added by later exporters) load when listed and hashed, and are checked."""
    shutil.copy(bundle / "head.onnx", bundle / "extra.onnx")

    def add(d: dict) -> None:
        d["graphs"]["extra"] = "extra.onnx"
        rehash(bundle, d, "extra.onnx")

    edit(bundle, add)
    assert load_bundle(bundle).graph_path("extra").name == "extra.onnx"
    (bundle / "extra.onnx").write_bytes(b"x" * (bundle / "extra.onnx").stat().st_size)
    assert "extra.onnx" in one_line_error(bundle)


@pytest.mark.parametrize(
    ("verification", "needle"),
    [({"passed": False, "graphs": {}}, "FAILED"), ({"status": "running"}, "did not finish")],
)
def test_failed_or_interrupted_verification_warns(bundle, verification, needle) -> None:
    """Defect 8: a bundle whose verification failed or was interrupted must say so when loaded."""
    edit(bundle, lambda d: d.update(verification=verification))
    with pytest.warns(UnverifiedBundleWarning, match=needle):
        load_bundle(bundle)


def test_unverified_by_choice_loads_silently(bundle) -> None:
    """--no-verify (verification null) is the user's choice: no warning."""
    edit(bundle, lambda d: d.update(verification=None))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedBundleWarning)
        load_bundle(bundle)
