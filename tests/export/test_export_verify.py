"""The verification criterion: correct graphs pass, graphs with a wrong backward rule fail.

Each mutation is applied to an exported graph's ONNX nodes (a sign flipped, a convolution kernel
transposed, one term of a gradient sum dropped), and ``verify_bundle`` must then fail that graph
while the untouched graphs still pass. The criterion's reading is in the report and manifest.
"""

from __future__ import annotations

import shutil
from copy import deepcopy
from typing import Callable

import numpy as np
import pytest
from nets import TINY_NETS

from opticam_rt.bundle import load_bundle, write_manifest
from opticam_rt.export import build_graphs, verify_bundle
from opticam_rt.export.verify import NORM_CAP, NORM_RTOL, norm_error

NET = "branch"  # a residual add and a concat: gradient sums to drop


def _flip_sign(model, output: str) -> None:
    """The graph output ``output`` negated."""
    import onnx

    producer = next(n for n in model.graph.node if output in n.output)
    producer.output[list(producer.output).index(output)] = f"{output}_unflipped"
    model.graph.node.append(onnx.helper.make_node("Neg", [f"{output}_unflipped"], [output]))


def _transpose_kernel(model, output: str) -> None:
    """The last k x k (k > 1) convolution before ``output`` reads its kernel transposed (h <-> w)."""
    import onnx

    shapes = {t.name: list(t.dims) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")
             and len(shapes.get(n.input[1], [])) == 4 and shapes[n.input[1]][2] == shapes[n.input[1]][3] > 1]
    conv = convs[-1]
    kernel = conv.input[1]
    model.graph.node.insert(0, onnx.helper.make_node("Transpose", [kernel], [f"{kernel}_transposed"], perm=[0, 1, 3, 2]))
    conv.input[1] = f"{kernel}_transposed"


def _drop_term(model, output: str) -> None:
    """The last Add of two computed tensors (a gradient accumulation) keeps only its first term."""
    constants = {t.name for t in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    adds = [n for n in model.graph.node if n.op_type == "Add" and not set(n.input) & constants]
    add = adds[-1]
    add.op_type = "Identity"
    del add.input[1:]


MUTATIONS: dict[str, Callable] = {"sign": _flip_sign, "transposed-kernel": _transpose_kernel, "missing-term": _drop_term}


@pytest.fixture(scope="module")
def branch_graphs():
    net = TINY_NETS[NET]
    graphs, _, _ = build_graphs(net.build(), net.tap, net.input_size, net.mean, net.std)
    return graphs


CASES = [("grad_image", m) for m in MUTATIONS] + [("grad_features", "sign"), ("grad_features", "missing-term")]


@pytest.mark.parametrize(("graph", "mutation"), CASES)
def test_wrong_backward_graph_fails(tiny_bundle, branch_graphs, tmp_path, mutation, graph):
    import onnx

    bundle, report = tiny_bundle(NET)
    assert report.graphs[graph].passed  # the unmutated graph passes
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    path = copy / bundle.manifest.graphs[graph]
    model = onnx.load(str(path), load_external_data=False)
    output = "grad_image" if graph == "grad_image" else "grad_features"
    MUTATIONS[mutation](model, output)
    onnx.save(model, str(path))
    write_manifest(copy, deepcopy(bundle.manifest))  # re-hashed: the bundle loads as a whole
    mutated = verify_bundle(load_bundle(copy), branch_graphs, names=[graph, "forward"])
    check = mutated.graphs[graph]
    assert not check.passed, f"{mutation} on {graph} passed: {mutated.format()}"
    assert check.norm_error > 10 * check.limit, check.norm_errors
    assert not mutated
    assert mutated.graphs["forward"].passed  # untouched, still passes
    assert "FAIL" in mutated.format()


def test_report_records_what_the_criterion_read(tiny_bundle):
    bundle, report = tiny_bundle(NET)
    stored = bundle.manifest.verification
    assert stored["passed"] is True and "normwise" in stored["criterion"]
    for name, check in report.graphs.items():
        entry = stored["graphs"][name]
        assert entry["passed"] is True
        assert entry["norm_error"] == pytest.approx(max(entry["norm_errors"].values()))
        assert NORM_RTOL <= entry["limit"] <= NORM_CAP
        assert set(entry["norm_errors"]) == set(entry["torch_float32_norm_errors"]) == set(check.errors)
        assert entry["norm_error"] <= entry["limit"]


def test_limit_follows_pytorch_float32_up_to_the_cap():
    """Where PyTorch float32 itself is far from float64 the limit rises with it, never past the cap."""
    from opticam_rt.export.verify import FLOOR_FACTOR, GraphCheck

    # VGG-16-BN's Opti-CAM step (random weights): PyTorch float32 1.3e-2 off on one case, 1.8e-4
    # on another where ONNX Runtime's gates flipped instead (2.6e-3).
    check = GraphCheck("opticam_step", checker="ok", norm_errors={"a": 2.7e-2, "b": 2.6e-3},
                       norm_floors={"a": 1.3e-2, "b": 1.8e-4})  # fmt: skip
    assert check.limit == pytest.approx(min(FLOOR_FACTOR * 1.3e-2, NORM_CAP)) and check.passed
    check.norm_floors = {"a": 1e-6, "b": 1e-6}
    assert check.limit == NORM_RTOL and not check.passed
    check.norm_floors = {"a": 0.5, "b": 1e-6}  # a noisy reference cannot lift the limit past the cap
    check.norm_errors = {"a": 0.2, "b": 1e-6}
    assert check.limit == NORM_CAP and not check.passed
