"""Check an exported bundle: ONNX Runtime against PyTorch autograd, onnx.checker, TensorRT op inventory."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from opticam_rt.bundle import GRAPH_SIGNATURES, Bundle
from opticam_rt.export.graphs import ExplainerGraphs
from opticam_rt.progress import Eta

#: A graph passes when, in every case and output, its normwise error against PyTorch float64,
#: ||onnxruntime - reference||_2 / ||reference||_2, is at most this, or FLOOR_FACTOR times PyTorch
#: float32's own largest normwise error over the cases, up to NORM_CAP. See docs/decisions.md: a
#: max-relative error failed correct graphs whenever one float32 gate flipped at a
#: discontinuity (a ReLU, ReLU6 or hardswish-backward mask: one element in 12,736 moved
#: MobileNetV3's image gradient by 1.2e-2 max-relative), while a normwise error sees that one
#: element as the small part of the gradient it is. Wrong rules (a sign, a transposed kernel, a
#: dropped term) read 0.1 to 2 (tests/export/test_export_verify.py).
NORM_RTOL = 1e-3
#: PyTorch float32's own normwise error, times this, raises the limit: deep random-weight
#: networks are chaotic in float32 (VGG-16-BN's Opti-CAM step: PyTorch float32 is 1.3e-2 from
#: float64 on real photos, ONNX Runtime 2.7e-2) ...
FLOOR_FACTOR = 4.0
#: ... but never above this, so a noisy reference cannot excuse a grossly wrong graph.
NORM_CAP = 5e-2
#: PyTorch float32 runs on each case's inputs and on this many copies with every nonzero element
#: moved to a neighbouring float32 (up or down at random): inputs float32 cannot tell apart. Where
#: max-pool windows hold near-ties, one such copy moves the float64 gradient itself by up to
#: 3e-2 (random-weight VGG-11-BN on photos), so a single float32 evaluation that happened to
#: take every near-tie the float64 way (1.3e-6) set a floor that failed a correct graph
#: (docs/decisions.md).
LAST_BIT_COPIES = 3
#: A graph whose ONNX Runtime (float32) error is above its limit but within NORM_CAP still passes
#: when the same graph made float64 (export/float64.py: every float32 tensor and weight cast up,
#: the same ops) is within ``GraphCheck.float64_limit`` of PyTorch float64 in every case: this, or
#: FLOOR_FACTOR x PyTorch float32's own error, capped at NORM_CAP. Float32 arithmetic takes the
#: other branch of a kink (hardswish at +-3, ReLU at 0, a max-pool near-tie) for an element within
#: its rounding of it, and ONNX Runtime's fused kernels round differently from PyTorch's, so
#: PyTorch float32 cannot bound it; the float64 graph flips only within the bundle's float32
#: weight rounding (1 ulp, which the floor's last-bit copies measure), while a wrong rule is as
#: wrong in float64 (0.1 to 2). Measured on MobileNetV3-Small (docs/decisions.md).
FLOAT64_RTOL = 1e-3


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (absolute when expected is all zeros)."""
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected))) if expected.size else 0.0
    return diff / scale if scale > 0 else diff


def norm_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """||actual - expected||_2 / ||expected||_2 in float64 (absolute when expected is all zeros)."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.linalg.norm(expected.ravel()))
    diff = float(np.linalg.norm((np.asarray(actual, dtype=np.float64) - expected).ravel()))
    return diff / scale if scale > 0 else diff


@dataclass
class GraphCheck:
    """Verification of one graph; every dict maps case name -> the worst output of that case.

    ``norm_errors``: ONNX Runtime's normwise error against float64 (the criterion);
    ``norm_floors``: PyTorch float32's own, the largest over the case's inputs and their
    LAST_BIT_COPIES last-bit copies; ``errors``/``floors``: the same as max-relative errors,
    reported for comparison with PyTorch's own rounding.
    """

    name: str
    errors: dict[str, float] = field(default_factory=dict)
    floors: dict[str, float] = field(default_factory=dict)
    norm_errors: dict[str, float] = field(default_factory=dict)
    norm_floors: dict[str, float] = field(default_factory=dict)
    #: the float64 graph's normwise error against PyTorch float64, per case; empty where it did
    #: not run (the float32 run passed on its own, or was beyond NORM_CAP)
    float64_errors: dict[str, float] = field(default_factory=dict)
    checker: str = "not run"
    #: every output of the PyTorch float64 reference is exactly zero in every case (a classifier
    #: or branch initialised to zero): the comparison would be of zeros, so it proves nothing
    reference_all_zero: bool = False
    ops: list[str] = field(default_factory=list)
    trt_issues: list[str] = field(default_factory=list)

    @property
    def max_error(self) -> float:
        """Largest max-relative error over the cases."""
        return max(self.errors.values(), default=0.0)

    @property
    def floor(self) -> float:
        """PyTorch float32's own largest max-relative error against float64 over the cases."""
        return max(self.floors.values(), default=0.0)

    @property
    def norm_error(self) -> float:
        """Largest normwise error over the cases: what the criterion reads."""
        return max(self.norm_errors.values(), default=0.0)

    @property
    def norm_floor(self) -> float:
        """PyTorch float32's own largest normwise error over the cases."""
        return max(self.norm_floors.values(), default=0.0)

    @property
    def limit(self) -> float:
        """NORM_RTOL, raised to FLOOR_FACTOR x PyTorch float32's largest normwise error over the
        cases, capped at NORM_CAP. Over all cases, not per case: float32 gate flips land on
        random cases, so PyTorch may be spared on the very case where ONNX Runtime is not."""
        return min(max(NORM_RTOL, FLOOR_FACTOR * self.norm_floor), NORM_CAP)

    @property
    def float64_error(self) -> float | None:
        """The float64 graph's largest normwise error over the cases, None where it did not run."""
        return max(self.float64_errors.values()) if self.float64_errors else None

    @property
    def float64_limit(self) -> float:
        """What the float64 graph is held to: FLOAT64_RTOL, raised to FLOOR_FACTOR x PyTorch
        float32's largest normwise error over the cases, capped at NORM_CAP."""
        return min(max(FLOAT64_RTOL, FLOOR_FACTOR * self.norm_floor), NORM_CAP)

    @property
    def needs_float64(self) -> bool:
        """The float32 run alone fails but is within NORM_CAP: the float64 graph decides."""
        return self.norm_error > self.limit and self.norm_error <= NORM_CAP

    @property
    def passed(self) -> bool:
        if self.checker != "ok" or self.reference_all_zero:
            return False
        if self.norm_error <= self.limit:
            return True
        f64 = self.float64_error
        return self.norm_error <= NORM_CAP and f64 is not None and f64 <= self.float64_limit

    @property
    def settled_by(self) -> str:
        """'float32' (ONNX Runtime's run within its limit), 'float64' (within NORM_CAP, and the
        float64 graph within ``float64_limit``), 'reference all zero' (nothing was compared) or 'failed'."""
        if self.reference_all_zero:
            return "reference all zero"
        if not self.passed:
            return "failed"
        return "float32" if self.norm_error <= self.limit else "float64"


@dataclass
class VerificationReport:
    graphs: dict[str, GraphCheck]

    def __bool__(self) -> bool:
        return all(g.passed for g in self.graphs.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": bool(self),
            "criterion": (
                "every case: normwise error ||ort - torch64|| / ||torch64|| <= limit = min(max("
                f"{NORM_RTOL}, {FLOOR_FACTOR} x torch float32's largest normwise error over the cases, each case's "
                f"inputs and {LAST_BIT_COPIES} copies moved by one float32 ulp), {NORM_CAP}); or, up to {NORM_CAP}, "
                f"the same graph made float64 within min(max({FLOAT64_RTOL}, the same floor), {NORM_CAP}) of torch64 in every "
                "case (a float32 flip at a kink, not a wrong rule)"
            ),
            "graphs": {
                name: {
                    "passed": g.passed,
                    "norm_error": g.norm_error,
                    "limit": g.limit,
                    "settled_by": g.settled_by,
                    "norm_errors": g.norm_errors,
                    "float64_graph_norm_error": g.float64_error,
                    "float64_graph_norm_errors": g.float64_errors,
                    "float64_graph_limit": g.float64_limit,
                    "torch_float32_norm_errors": g.norm_floors,
                    "max_relative_error": g.max_error,
                    "max_relative_errors": g.errors,
                    "torch_float32_max_relative_errors": g.floors,
                    "checker": g.checker,
                    "reference_all_zero": g.reference_all_zero,
                    "ops": g.ops,
                    "tensorrt_issues": g.trt_issues,
                }
                for name, g in self.graphs.items()
            },
        }

    def format(self) -> str:
        lines = [
            f"{'graph':<14} {'norm err':>9} {'torch f32':>9} {'limit':>8} {'f64 graph':>9}  {'result':<6} {'max rel':>8} "
            f"{'torch f32':>9} {'checker':<7} TensorRT 10 parser"
        ]
        for name, g in self.graphs.items():
            trt = "all ops supported" if not g.trt_issues else "; ".join(g.trt_issues)
            f64 = "-" if g.float64_error is None else f"{g.float64_error:.2e}"
            lines.append(
                f"{name:<14} {g.norm_error:>9.2e} {g.norm_floor:>9.2e} {g.limit:>8.1e} {f64:>9}  "
                f"{'ok' if g.passed else 'ZERO' if g.reference_all_zero else 'FAIL':<6} {g.max_error:>8.2e} {g.floor:>9.2e} {g.checker[:7]:<7} {trt}"
            )
        lines.append(
            "norm err = ||onnxruntime - reference|| / ||reference|| against PyTorch float64, worst case and output "
            "(the criterion); max rel = max |difference| / max |reference|, for comparison; 'torch f32' is PyTorch "
            f"float32's own figure, on the inputs and {LAST_BIT_COPIES} copies one ulp away; f64 graph = the same graph made "
            f"float64, run where norm err is above its limit but within {NORM_CAP} (within max({FLOAT64_RTOL}, the floor) it "
            f"passes: a float32 flip at a kink, not a wrong rule); ZERO = PyTorch's float64 outputs are all exactly "
            f"zero in every case (a layer initialised to zero?), so nothing was compared. Verification {'PASSED' if self else 'FAILED'}."
        )
        return "\n".join(lines)


def tensorrt_supported_ops() -> dict[str, str]:
    """Op name -> restriction note, from opticam_rt/data/tensorrt10_onnx_ops.txt."""
    text = resources.files("opticam_rt").joinpath("data/tensorrt10_onnx_ops.txt").read_text()
    ops = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, note = line.partition("|")
            ops[name.strip()] = note.strip()
    return ops


def graph_nodes(graph: "onnx.GraphProto") -> Iterator["onnx.NodeProto"]:  # noqa: F821
    """Every node of ``graph``, including those of Loop/If/Scan bodies (depth first)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                yield from graph_nodes(sub)


def tensorrt_op_issues(model: "onnx.ModelProto") -> list[str]:  # noqa: F821
    """Static check of a graph against the TensorRT 10 ONNX parser's operator list."""
    supported = tensorrt_supported_ops()
    issues: set[str] = set()
    for node in graph_nodes(model.graph):
        if node.domain not in ("", "ai.onnx"):
            issues.add(f"{node.domain}::{node.op_type} is not a default-domain op")
        elif node.op_type not in supported:
            issues.add(f"{node.op_type} unsupported")
        elif node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
            issues.add("MaxPool with Indices output unsupported")
        elif node.op_type == "ScatterElements":
            reduction = next((a.s.decode() for a in node.attribute if a.name == "reduction"), "none")
            if reduction != "none":
                issues.add(f"ScatterElements reduction={reduction} needs a plugin")
    return sorted(issues)


def _reference_cases(
    graphs: ExplainerGraphs, num_classes: int, real_images: np.ndarray | None, seed: int = 0
) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """case name -> graph name -> input feeds, for random and real images at batch 1 and 3."""
    g = torch.Generator().manual_seed(seed)
    h, w = graphs.input_size
    sources: dict[str, torch.Tensor] = {"random": torch.rand(3, 3, h, w, generator=g)}
    if real_images is not None and len(real_images):
        real = torch.from_numpy(np.asarray(real_images, dtype=np.float32))
        sources["real"] = real[:3] if len(real) >= 3 else real.repeat(3, 1, 1, 1)[:3]
    cases = {}
    for source, images in sources.items():
        for batch in (1, 3):
            image = images[:batch].contiguous()
            with torch.no_grad():
                logits, features = graphs.forward(image)
            cotangent = torch.randn(batch, num_classes, generator=g)
            onehot = torch.nn.functional.one_hot(logits.argmax(1), num_classes).float()
            k = features.shape[1]
            u = torch.randn(batch, k, generator=g)
            feeds = {
                "forward": {"image": image},
                "grad_features": {"image": image, "cotangent": cotangent},
                "grad_image": {"image": image, "cotangent": cotangent},
                "head": {"features": features},
                "opticam_step": {"image": image, "features": features, "u": u, "cotangent": onehot},
            }
            cases[f"{source}-b{batch}"] = {n: {k: v.numpy() for k, v in f.items()} for n, f in feeds.items()}
    return cases


def _torch_outputs(graphs: ExplainerGraphs, name: str, feeds: dict[str, np.ndarray], dtype: torch.dtype) -> list[np.ndarray]:
    """PyTorch's outputs of graph ``name`` on ``feeds``. A batch of one runs as a batch of two
    (the image repeated) and keeps the first row: PyTorch 2.13's CPU BatchNorm2d backward in
    eval mode returns a wrong input gradient at batch 1 when the incoming gradient has
    channels-last strides (a token model's ``flatten(2).transpose(1, 2)`` after a conv + BN
    stem, as LeViT's): 1.46 normwise on a tiny LeViT, while batch 2 and the ONNX graph agree
    with finite differences (docs/decisions.md). Rows are independent in eval mode."""
    fn: Callable[..., Any] = getattr(graphs, name)
    inputs = [torch.from_numpy(feeds[n]).to(dtype) for n in GRAPH_SIGNATURES[name][0]]
    single = all(t.shape[0] == 1 for t in inputs)
    if single:
        inputs = [t.repeat(2, *([1] * (t.dim() - 1))) for t in inputs]
    out = fn(*inputs)
    out = out if isinstance(out, tuple) else (out,)
    return [(o[:1] if single else o).detach().numpy() for o in out]


def _worst(metric: Callable[[np.ndarray, np.ndarray], float], outputs: Sequence[np.ndarray],
           exact: Sequence[np.ndarray]) -> float:  # fmt: skip
    """The largest ``metric(output, reference)`` over a graph's outputs."""
    return max(metric(a, b) for a, b in zip(outputs, exact))


def last_bit_copy(feeds: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``feeds`` with every nonzero float element moved to an adjacent float32, up or down at random.

    Zeros stay zero (a one-hot cotangent keeps its support). Shapes are unchanged.
    """
    moved = {}
    for name, value in feeds.items():
        value = np.asarray(value)
        if value.dtype != np.float32:
            moved[name] = value
            continue
        direction = np.where(rng.random(value.shape) < 0.5, -np.inf, np.inf).astype(np.float32)
        moved[name] = np.where(value != 0, np.nextafter(value, direction), value)
    return moved


def verify_bundle(
    bundle: Bundle,
    graphs: ExplainerGraphs,
    real_images: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
    names: Sequence[str] | None = None,
    seed: int = 0,
    float64: bool | None = None,
) -> VerificationReport:
    """Run every graph under ONNX Runtime (CPU) and compare with PyTorch eager autograd.

    The reference is PyTorch float64; a graph passes when, in every case and output, its
    normwise error is within ``GraphCheck.limit`` (see ``NORM_RTOL``). PyTorch float32 runs on
    each case and on ``LAST_BIT_COPIES`` copies of its inputs one ulp away: how far float32 can
    legitimately land from float64 there (see ``LAST_BIT_COPIES``).

    Args:
        real_images: optional (M, 3, H, W) pixels in [0, 1]; cases on random pixels always run.
        names: the graphs to check (default: every graph of the bundle).
        seed: of the random images, cotangents and Opti-CAM weights of the cases.
        float64: run each graph made float64 (``GraphCheck.float64_limit``) always (True), never (False),
            or only where the float32 run alone fails within NORM_CAP (None, the default).
    """
    import onnx
    import onnxruntime as ort

    cases = _reference_cases(graphs, bundle.manifest.num_classes, real_images, seed)
    rng = np.random.default_rng(seed)
    graphs64 = graphs.to_float64()
    report = VerificationReport({})
    todo = list(names or bundle.manifest.graphs)
    eta = Eta(len(todo))
    if log:
        log(
            f"verifying {len(todo)} graph(s) against PyTorch float64 autograd on {len(cases)} case(s) "
            f"(one graph at a time; the backward graphs take longest)"
        )
    for name in todo:
        path = bundle.graph_path(name)
        check = GraphCheck(name)
        try:
            onnx.checker.check_model(str(path), full_check=True)
            check.checker = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded in the report
            check.checker = f"failed: {exc}"
        model = onnx.load(str(path), load_external_data=False)
        check.ops = sorted({n.op_type for n in model.graph.node})
        check.trt_issues = tensorrt_op_issues(model)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        exacts = {}
        for case, feeds_by_graph in cases.items():
            feeds = feeds_by_graph[name]
            got = session.run(None, feeds)
            exact = exacts[case] = _torch_outputs(graphs64, name, feeds, torch.float64)
            check.errors[case] = _worst(relative_error, got, exact)
            check.norm_errors[case] = _worst(norm_error, got, exact)
            runs = [feeds] + [last_bit_copy(feeds, rng) for _ in range(LAST_BIT_COPIES)]
            floors = [_torch_outputs(graphs, name, inputs, torch.float32) for inputs in runs]
            check.floors[case] = max(_worst(relative_error, torch32, exact) for torch32 in floors)
            check.norm_floors[case] = max(_worst(norm_error, torch32, exact) for torch32 in floors)
        del session  # one graph's session (and its copy of the weights) alive at a time
        check.reference_all_zero = not any(np.any(out) for exact in exacts.values() for out in exact)
        if check.reference_all_zero and log:
            log(f"{name}: PyTorch float64's outputs are exactly zero in every case, so the check compares nothing "
                "(is a layer after the tap, e.g. the classifier, initialised to zero?)")  # fmt: skip
        if float64 or (float64 is None and check.needs_float64):
            from opticam_rt.export.float64 import Float64Graph

            if log:
                log(f"{name}: normwise error {check.norm_error:.2e} above its limit {check.limit:.1e}; "
                    "running the graph in float64 to tell a float32 flip at a kink from a wrong rule")  # fmt: skip
            graph64 = Float64Graph(path)
            for case, feeds_by_graph in cases.items():
                check.float64_errors[case] = _worst(norm_error, graph64.run(feeds_by_graph[name]), exacts[case])
            del graph64
        if log:
            log(
                f"verified {name} ({eta.step()}): normwise error {check.norm_error:.2e} "
                f"(limit {check.limit:.1e})"
                + ("" if check.float64_error is None else f", float64 graph {check.float64_error:.2e}")
                + f", {'ok' if check.passed else 'FAILED'}"
            )
        report.graphs[name] = check
    return report
