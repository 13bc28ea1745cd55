"""The verification criterion: correct graphs pass, graphs with a wrong backward rule fail.

Each mutation is applied to an exported graph's ONNX nodes (a sign flipped, a convolution kernel
transposed, one term of a gradient sum dropped), and ``verify_bundle`` must then fail that graph
while the untouched graphs still pass. The criterion's reading is in the report and manifest.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from copy import deepcopy
from typing import Callable

import numpy as np
import pytest
import torch
from nets import TINY_NETS

from opticam_rt.bundle import load_bundle, write_manifest
from opticam_rt.export import build_graphs, verify_bundle
from opticam_rt.export.verify import NORM_CAP, NORM_RTOL

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


def _scale_output(model, output: str) -> None:
    """The graph output ``output`` times 1.01: a wrong rule whose float32 error (1e-2) is within
    NORM_CAP, so only the float64 graph can tell it from a float32 flip at a kink."""
    import onnx

    producer = next(n for n in model.graph.node if output in n.output)
    producer.output[list(producer.output).index(output)] = f"{output}_unscaled"
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.01, np.float32), f"{output}_scale"))
    model.graph.node.append(onnx.helper.make_node("Mul", [f"{output}_unscaled", f"{output}_scale"], [output]))


MUTATIONS: dict[str, Callable] = {"sign": _flip_sign, "transposed-kernel": _transpose_kernel, "missing-term": _drop_term,
                                  "scaled-1.01": _scale_output}  # fmt: skip


def mutated_copy(bundle, graph: str, mutation: str, output: str, dest: Path) -> Path:
    """A copy of ``bundle`` at ``dest`` whose ``graph`` has ``mutation`` applied before ``output``,
    its manifest re-hashed so the bundle loads as a whole. IndexError: the graph has no node
    the mutation changes (no Add of two computed tensors in a plain VGG)."""
    import onnx

    shutil.copytree(bundle.path, dest)
    path = dest / bundle.manifest.graphs[graph]
    model = onnx.load(str(path), load_external_data=False)
    MUTATIONS[mutation](model, output)
    onnx.save(model, str(path))
    write_manifest(dest, deepcopy(bundle.manifest))
    return dest


@pytest.fixture(scope="module")
def branch_graphs():
    net = TINY_NETS[NET]
    graphs, _, _ = build_graphs(net.build(), net.tap, net.input_size, net.mean, net.std)
    return graphs


CASES = [("grad_image", m, "grad_image") for m in MUTATIONS] + [
    ("grad_features", "sign", "grad_features"), ("grad_features", "missing-term", "grad_features"),
    ("opticam_step", "scaled-1.01", "grad_u"),
]  # fmt: skip


@pytest.mark.parametrize(("graph", "mutation", "output"), CASES)
def test_wrong_backward_graph_fails(tiny_bundle, branch_graphs, tmp_path, mutation, graph, output):
    """Each mutation fails, by its float32 run and by the same graph in float64 (which would
    otherwise excuse a float32 error within NORM_CAP as a flip at a kink)."""
    bundle, report = tiny_bundle(NET)
    assert report.graphs[graph].passed  # the unmutated graph passes
    copy = mutated_copy(bundle, graph, mutation, output, tmp_path / "bundle")
    mutated = verify_bundle(load_bundle(copy), branch_graphs, names=[graph, "forward"], float64=True)
    check = mutated.graphs[graph]
    assert not check.passed, f"{mutation} on {graph} passed: {mutated.format()}"
    assert check.norm_error > 5 * check.limit, check.norm_errors
    assert check.float64_error > 5 * check.float64_limit, check.float64_errors
    assert not mutated
    assert mutated.graphs["forward"].passed  # untouched, still passes
    assert mutated.graphs["forward"].float64_error < 1e-5
    assert "FAIL" in mutated.format()


def test_float64_graph_settles_a_float32_excess_within_the_cap(tiny_bundle, branch_graphs, tmp_path, monkeypatch):
    """With the float32 limit pushed below rounding (as a flip at a kink pushes the error above
    it), a correct graph passes by its float64 run and a wrong one (x 1.01) still fails."""
    import opticam_rt.export.verify as verify

    bundle, _ = tiny_bundle(NET)  # exported (and verified) before the limit is pushed down
    monkeypatch.setattr(verify, "NORM_RTOL", 1e-12)
    monkeypatch.setattr(verify, "FLOOR_FACTOR", 0.0)
    report = verify_bundle(bundle, branch_graphs, names=["grad_image", "opticam_step"])
    for check in report.graphs.values():
        assert check.norm_error > check.limit  # float32 alone would fail ...
        assert check.float64_error is not None and check.float64_error < 1e-5, check.float64_errors
        assert check.passed and check.settled_by == "float64"  # ... the float64 graph settles it
    assert report.to_dict()["graphs"]["grad_image"]["settled_by"] == "float64"
    copy = mutated_copy(bundle, "grad_image", "scaled-1.01", "grad_image", tmp_path / "bundle")
    check = verify_bundle(load_bundle(copy), branch_graphs, names=["grad_image"]).graphs["grad_image"]
    assert check.norm_error <= NORM_CAP and check.float64_error > 5 * check.float64_limit
    assert not check.passed and check.settled_by == "failed"


def test_float64_graph_runs_only_where_float32_fails_within_the_cap(tiny_bundle):
    from opticam_rt.export.verify import GraphCheck

    _, report = tiny_bundle(NET)
    assert all(check.float64_error is None and check.settled_by == "float32" for check in report.graphs.values())
    wrong = GraphCheck("grad_image", checker="ok", norm_errors={"a": 0.2}, norm_floors={"a": 1e-7},
                       float64_errors={"a": 1e-9})  # fmt: skip
    assert not wrong.needs_float64 and not wrong.passed  # beyond the cap: no float64 run excuses it
    flip = GraphCheck("grad_image", checker="ok", norm_errors={"a": 1.28e-2}, norm_floors={"a": 1.16e-5})
    assert flip.needs_float64 and not flip.passed  # not run yet: fails
    flip.float64_errors = {"a": 3e-6}
    assert flip.passed and flip.settled_by == "float64"


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


def test_last_bit_copy_moves_every_nonzero_float_by_one_ulp():
    from opticam_rt.export.verify import last_bit_copy

    rng = np.random.default_rng(0)
    image = np.random.default_rng(1).random((2, 3, 8, 8), dtype=np.float32)
    image[0, 0, 0, :4] = 0.0
    onehot = np.eye(4, dtype=np.float32)[[1, 3]]
    labels = np.array([1, 3], dtype=np.int64)
    moved = last_bit_copy({"image": image, "cotangent": onehot, "labels": labels}, rng)
    steps = np.abs(moved["image"].astype(np.float64) - image)
    nonzero = image != 0
    ulp_down = image - np.nextafter(image, np.float32(-np.inf))
    ulp_up = np.nextafter(image, np.float32(np.inf)) - image
    assert np.all((steps[nonzero] == ulp_down[nonzero]) | (steps[nonzero] == ulp_up[nonzero]))
    assert np.all(steps[nonzero] > 0) and np.all(moved["image"][~nonzero] == 0)
    up = moved["image"] > image
    assert 0.3 < up[nonzero].mean() < 0.7  # both directions, at random
    assert moved["image"].dtype == np.float32 and moved["image"].shape == image.shape
    assert np.array_equal(moved["cotangent"] != 0, onehot != 0)  # the one-hot keeps its support
    assert moved["labels"] is labels  # integers pass through


class _KinkedConvNet(torch.nn.Module):
    """A kink placed at the image ``at`` (``forward`` of the subclass), then a conv (the tap) and
    a linear head, with weights drawn from the seed ``SEED``."""

    SEED = 0

    def __init__(self, at: torch.Tensor) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(self.SEED)
        self.register_buffer("at", at)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))


class _KinkNet(_KinkedConvNet):
    """relu(x - at) + x: at x == at the image gradient jumps, so inputs one float32 ulp away have
    gradients far from float64's at x itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(torch.relu(x - self.at) + x)
        return self.fc(features.mean((2, 3)))


def test_pytorch_float32_floor_sees_a_gradient_that_jumps_within_one_ulp(tmp_path):
    """The floor's last-bit copies find the discontinuity a single float32 evaluation misses:
    at the kink PyTorch float32 agrees with float64 exactly, one ulp away it does not."""
    from opticam_rt.export import export_bundle

    photos = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    model = _KinkNet(photos[0]).eval()  # photo 0 sits on the kink at every pixel
    # mean 0 and std 1: the normalised image is the photo itself, bit for bit
    bundle, _ = export_bundle(model, tmp_path / "kink", tap="conv", input_size=(12, 12), mean=(0.0,) * 3,
                              std=(1.0,) * 3, verify=False, explainers=False)  # fmt: skip
    graphs, _, _ = build_graphs(model, "conv", (12, 12), (0.0,) * 3, (1.0,) * 3)
    check = verify_bundle(bundle, graphs, real_images=photos.numpy(), names=["grad_image"]).graphs["grad_image"]
    assert check.norm_floors["real-b1"] > 0.1, check.norm_floors  # photo 0, one ulp away: the jump
    assert max(check.norm_floors["random-b1"], check.norm_floors["random-b3"]) < 1e-5  # no kink there
    assert check.norm_errors["real-b1"] < 1e-5  # ONNX Runtime computes the kink as float64 does
    assert check.limit == NORM_CAP and check.passed


class _HardswishKinkNet(_KinkedConvNet):
    """hardswish(s (x - at) + 3) + hardswish(s (x - at) - 3): where x == at both of hardswish's
    kinks (+3 and -3, where its derivative jumps by 0.5) are hit exactly; s = 1e4 so that one
    float32 ulp of x moves the argument past float32's spacing at 3. Then a conv tap and a head."""

    SEED = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x - self.at) * 1e4
        h = torch.nn.functional.hardswish(d + 3) + torch.nn.functional.hardswish(d - 3)
        return self.fc(self.conv(h).mean((2, 3)))


def test_hardswish_at_its_kinks_float64_graph_equals_float64_autograd(tmp_path):
    """At inputs on both kinks the float64 graph takes float64's branch (error ~1e-16) although
    one ulp away the gradient jumps (the floor), and a wrong rule there still fails."""
    from opticam_rt.export import export_bundle

    photos = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    model = _HardswishKinkNet(photos[0]).eval()
    bundle, _ = export_bundle(model, tmp_path / "kink", tap="conv", input_size=(12, 12), mean=(0.0,) * 3,
                              std=(1.0,) * 3, verify=False, explainers=False)  # fmt: skip
    graphs, _, _ = build_graphs(model, "conv", (12, 12), (0.0,) * 3, (1.0,) * 3)
    check = verify_bundle(bundle, graphs, real_images=photos.numpy(), names=["grad_image"], float64=True).graphs["grad_image"]
    assert check.norm_floors["real-b1"] > 0.05, check.norm_floors  # one ulp away: the jumps
    assert max(check.float64_errors.values()) < 1e-10, check.float64_errors
    assert check.passed
    assert check.limit == NORM_CAP  # the jumps raise the float32 limit to the cap ...
    copy = mutated_copy(bundle, "grad_image", "transposed-kernel", "grad_image", tmp_path / "mutated")
    wrong = verify_bundle(load_bundle(copy), graphs, real_images=photos.numpy(), names=["grad_image"], float64=True)
    # ... which a wrong rule still exceeds, in float32 and in float64
    assert wrong.graphs["grad_image"].norm_error > NORM_CAP and wrong.graphs["grad_image"].float64_error > NORM_CAP
    assert not wrong.graphs["grad_image"].passed


class _ZeroHeadNet(_KinkedConvNet):
    """A conv tap and a classifier initialised to zero (as timm does MLP-Mixer's): every
    gradient of a logit is exactly zero, so a backward graph has nothing to be compared on."""

    def __init__(self) -> None:
        super().__init__(torch.zeros(()))
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_a_reference_of_zeros_is_not_a_pass(tmp_path):
    """Comparing zeros with zeros gives error 0; verification says it compared nothing instead."""
    from opticam_rt.export import export_bundle

    model = _ZeroHeadNet().eval()
    bundle, _ = export_bundle(model, tmp_path / "zero", tap="conv", input_size=(12, 12), mean=(0.0,) * 3,
                              std=(1.0,) * 3, verify=False, explainers=False)  # fmt: skip
    graphs, _, _ = build_graphs(model, "conv", (12, 12), (0.0,) * 3, (1.0,) * 3)
    logged: list[str] = []
    report = verify_bundle(bundle, graphs, names=["forward", "grad_image"], log=logged.append)
    zero = report.graphs["grad_image"]
    assert zero.norm_error == 0 and zero.reference_all_zero and not zero.passed and not report
    assert zero.settled_by == "reference all zero"
    assert any("exactly zero in every case" in line for line in logged)
    assert "ZERO" in report.format() and report.to_dict()["graphs"]["grad_image"]["reference_all_zero"] is True
    # the forward graph has the features to compare: it is checked as usual
    assert not report.graphs["forward"].reference_all_zero and report.graphs["forward"].passed
