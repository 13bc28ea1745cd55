"""Issue 21, defect 8: explainer graphs are checked at load like the core graphs, and a graph
file that vanished after loading is a BundleError under ``engine="graph"``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from opticam_rt.bundle import MANIFEST, load_bundle
from opticam_rt.errors import BundleError
from opticam_rt.export.explainer_graphs import EXPLAINER_GRAPHS, describe
from opticam_rt.manifest import METHOD_METADATA
from opticam_rt.methods import REGISTRY


@pytest.fixture
def copy(bundle_dir, tmp_path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(bundle_dir, out)
    return out


def rehash(bundle: Path, name: str) -> None:
    data = json.loads((bundle / MANIFEST).read_text())
    blob = (bundle / name).read_bytes()
    data["files"][name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    (bundle / MANIFEST).write_text(json.dumps(data))


def test_signatures_match_what_the_exporter_writes(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert set(EXPLAINER_GRAPHS) == set(bundle.manifest.explainers)
    for method in EXPLAINER_GRAPHS:
        inputs, outputs = REGISTRY[method].graph_signature()
        entry = describe(method, "x.onnx", _sizes(bundle))
        assert (tuple(entry["inputs"]), tuple(entry["outputs"])) == (inputs, outputs)
        model = onnx.load(str(bundle.explainer_path(method)), load_external_data=False)
        assert tuple(i.name for i in model.graph.input) == inputs and tuple(o.name for o in model.graph.output) == outputs
        assert {p.key: p.value for p in model.metadata_props}[METHOD_METADATA] == method


def _sizes(bundle):
    from opticam_rt.export.explainer_graphs import Sizes

    m = bundle.manifest
    return Sizes(tuple(m.input_size), tuple(m.tap_shape[1:]), m.tap_shape[0], m.num_classes)


def test_grad_cam_graph_replaced_by_opti_cam_is_refused(copy):
    """It ran Opti-CAM under Grad-CAM's name (rc 0)."""
    model = onnx.load(str(copy / "explain_opti_cam.onnx"), load_external_data=False)
    del model.metadata_props[:]  # as a bundle exported before the method was recorded
    onnx.save(model, str(copy / "explain_grad_cam.onnx"))
    rehash(copy, "explain_grad_cam.onnx")
    with pytest.raises(BundleError, match=r"explain_grad_cam\.onnx: graph 'explain grad-cam' has inputs .*iterations"):
        load_bundle(copy)


def test_same_signature_swap_is_refused_by_the_recorded_method(copy):
    shutil.copy(copy / "explain_xgrad_cam.onnx", copy / "explain_grad_cam.onnx")
    rehash(copy, "explain_grad_cam.onnx")
    with pytest.raises(BundleError, match=r"of 'xgrad-cam' is listed as the graph of 'grad-cam'"):
        load_bundle(copy)


def test_explainer_entry_must_describe_the_graph(copy):
    data = json.loads((copy / MANIFEST).read_text())
    data["explainers"]["grad-cam"]["inputs"]["iterations"] = {"dtype": "int64", "shape": []}
    (copy / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="grad-cam explainer entry lists inputs"):
        load_bundle(copy)


def test_unknown_explainer_method_is_refused(copy):
    data = json.loads((copy / MANIFEST).read_text())
    data["explainers"]["evil-cam"] = data["explainers"]["grad-cam"]
    (copy / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(BundleError, match="unknown method 'evil-cam'"):
        load_bundle(copy)


@pytest.mark.parametrize("gone", ["explain_grad_cam.onnx", "weights.bin"])
def test_graph_engine_files_vanishing_after_load_is_a_bundle_error(copy, gone):
    from opticam_rt.runtime import Explainer

    images = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    with Explainer(copy, backend="ort-cpu", engine="graph", threads=1) as explainer:
        (copy / gone).unlink()
        with pytest.raises(BundleError, match=gone.replace(".", r"\.")):
            explainer.explain(images, "grad-cam")
