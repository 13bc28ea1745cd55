"""An engine that refuses a graph gives a one-line BundleError naming the graph file, not the
engine's own (multi-line) exception."""

from __future__ import annotations

import numpy as np
import pytest

from opticam_rt.errors import BundleError
from opticam_rt.runtime.runners import create_runner, is_available

ENGINE_MESSAGE = "[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model failed:\nThis is an invalid model.\n  line 3"


def test_onnxruntime_refusal_is_a_bundle_error(tiny_bundle, tiny_images, monkeypatch):
    import onnxruntime

    def refuse(*args, **kwargs):
        raise RuntimeError(ENGINE_MESSAGE)

    runner = create_runner("ort-cpu", tiny_bundle).activate()
    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)
    with pytest.raises(BundleError) as info:
        runner.infer("forward", {"image": tiny_images})
    message = str(info.value)
    assert str(tiny_bundle.graph_path("forward")) in message and "ONNX Runtime cannot load" in message
    assert "\n" not in message and "INVALID_GRAPH" in message


@pytest.mark.skipif(not is_available("ov-cpu"), reason="needs openvino")
def test_openvino_refusal_is_a_bundle_error(tiny_bundle, tiny_images, monkeypatch):
    runner = create_runner("ov-cpu", tiny_bundle).activate()

    def refuse(*args, **kwargs):
        raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:112:\nCannot compile")

    monkeypatch.setattr(runner.core, "compile_model", refuse)
    with pytest.raises(BundleError) as info:
        runner.infer("forward", {"image": np.ascontiguousarray(tiny_images[:2])})
    message = str(info.value)
    assert str(tiny_bundle.graph_path("forward")) in message and "for batch 2" in message and "\n" not in message


@pytest.mark.parametrize(("threads", "cores", "pinning"), [
    (None, 2, None),  # all cores: OpenVINO's default (pinned)
    (2, 2, None),
    (1, 2, False),  # a share of the machine (a Ray actor): not pinned, or every such process sits on core 0
    (4, 16, False),
    (1, 1, None),
])
def test_openvino_pins_threads_only_when_it_has_every_core(tiny_bundle, monkeypatch, threads, cores, pinning):
    from opticam_rt.runtime import openvino_runner

    monkeypatch.setattr(openvino_runner, "usable_cores", lambda: cores)
    config = openvino_runner.OvRunner(tiny_bundle, threads=threads).config()
    assert config.get("ENABLE_CPU_PINNING") is pinning
    assert config.get("INFERENCE_NUM_THREADS") == threads
