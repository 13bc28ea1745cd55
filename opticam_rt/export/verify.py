"""Check an exported bundle: ONNX Runtime against PyTorch autograd, onnx.checker, TensorRT op inventory."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable, Iterator

import numpy as np
import torch

from opticam_rt.bundle import GRAPH_SIGNATURES, Bundle
from opticam_rt.export.graphs import ExplainerGraphs

#: float32 parity limit, relative to the reference's max |value|.
PARITY_RTOL = 1e-4
#: A graph also passes when its error against PyTorch float64 is within this factor of PyTorch
#: float32's own error against float64 (see docs/decisions.md: ReLU6/ReLU gates that flip under
#: float32 rounding put PyTorch itself 4e-3 away from float64 on image gradients of real photos).
FLOOR_FACTOR = 4.0


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (absolute when expected is all zeros)."""
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected))) if expected.size else 0.0
    return diff / scale if scale > 0 else diff


@dataclass
class GraphCheck:
    """Verification of one graph. ``errors`` maps case name -> max relative error over outputs."""

    name: str
    errors: dict[str, float] = field(default_factory=dict)
    floors: dict[str, float] = field(default_factory=dict)
    checker: str = "not run"
    ops: list[str] = field(default_factory=list)
    trt_issues: list[str] = field(default_factory=list)

    @property
    def max_error(self) -> float:
        return max(self.errors.values(), default=0.0)

    @property
    def floor(self) -> float:
        """PyTorch float32's own largest relative error against float64 over the cases."""
        return max(self.floors.values(), default=0.0)

    @property
    def limit(self) -> float:
        return max(PARITY_RTOL, FLOOR_FACTOR * self.floor)

    @property
    def passed(self) -> bool:
        return self.checker == "ok" and self.max_error <= self.limit


@dataclass
class VerificationReport:
    graphs: dict[str, GraphCheck]

    def __bool__(self) -> bool:
        return all(g.passed for g in self.graphs.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": bool(self),
            "parity_rtol": PARITY_RTOL,
            "graphs": {
                name: {
                    "passed": g.passed,
                    "max_relative_error": g.max_error,
                    "errors": g.errors,
                    "torch_float32_floor": g.floors,
                    "limit": g.limit,
                    "checker": g.checker,
                    "ops": g.ops,
                    "tensorrt_issues": g.trt_issues,
                }
                for name, g in self.graphs.items()
            },
        }

    def format(self) -> str:
        lines = [
            f"{'graph':<14} {'max rel err':>11} {'torch f32':>10} {'limit':>9}  {'result':<6} {'checker':<7} TensorRT 10 parser"
        ]
        for name, g in self.graphs.items():
            trt = "all ops supported" if not g.trt_issues else "; ".join(g.trt_issues)
            lines.append(
                f"{name:<14} {g.max_error:>11.2e} {g.floor:>10.2e} {g.limit:>9.1e}  "
                f"{'ok' if g.passed else 'FAIL':<6} {g.checker[:7]:<7} {trt}"
            )
        lines.append(
            "errors are max |onnxruntime - reference| / max |reference| against PyTorch float64; "
            f"'torch f32' is PyTorch float32's own error. Verification {'PASSED' if self else 'FAILED'}."
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
    fn: Callable[..., Any] = getattr(graphs, name)
    inputs = [torch.from_numpy(feeds[n]).to(dtype) for n in GRAPH_SIGNATURES[name][0]]
    out = fn(*inputs)
    out = out if isinstance(out, tuple) else (out,)
    return [o.detach().numpy() for o in out]


def verify_bundle(
    bundle: Bundle,
    graphs: ExplainerGraphs,
    real_images: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> VerificationReport:
    """Run every graph under ONNX Runtime (CPU) and compare with PyTorch eager autograd.

    The reference is PyTorch float64; a graph passes when, in every case, its relative error is
    at most ``PARITY_RTOL`` or at most ``FLOOR_FACTOR`` times PyTorch float32's own error.

    Args:
        real_images: optional (M, 3, H, W) pixels in [0, 1]; cases on random pixels always run.
    """
    import onnx
    import onnxruntime as ort

    cases = _reference_cases(graphs, bundle.manifest.num_classes, real_images)
    graphs64 = graphs.to_float64()
    report = VerificationReport({})
    for name in bundle.manifest.graphs:
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
        for case, feeds_by_graph in cases.items():
            feeds = feeds_by_graph[name]
            got = session.run(None, feeds)
            exact = _torch_outputs(graphs64, name, feeds, torch.float64)
            torch32 = _torch_outputs(graphs, name, feeds, torch.float32)
            check.errors[case] = max(relative_error(a, b) for a, b in zip(got, exact))
            check.floors[case] = max(relative_error(a, b) for a, b in zip(torch32, exact))
        if log:
            log(f"verified {name}: max relative error {check.max_error:.2e}")
        report.graphs[name] = check
    return report
