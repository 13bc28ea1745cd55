"""The Explainer API: what an Explanation holds, targets, and the errors callers get."""

from __future__ import annotations

import numpy as np
import pytest

from opticam_rt.errors import BackendUnavailableError, InputError, OpticamError
from opticam_rt.runtime import METHOD_NAMES, Explainer, resolve_backend
from opticam_rt.methods import REGISTRY
from opticam_rt.methods.cam_family import softmax


def test_registry_and_method_names_agree():
    """METHOD_NAMES is the registry's key list; every key is its class's name, lowercase with
    hyphens; every method's auto order names only registered backends."""
    from opticam_rt.runtime.runners import CPU_ORDER, RUNNERS

    assert METHOD_NAMES == tuple(REGISTRY)
    for name, record in REGISTRY.items():
        assert record.host.name == name and name == name.lower() and " " not in name and "_" not in name
        assert record.cpu_order and set(record.cpu_order) <= set(RUNNERS), record.cpu_order
    assert CPU_ORDER and set(CPU_ORDER) <= set(RUNNERS)


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("backend", ("ort", "torch"))
def test_explanation_fields(method, backend, tiny_ort, tiny_torch, tiny_images, tiny, check):
    explainer = tiny_ort if backend == "ort" else tiny_torch
    optimising = method.endswith("opti-cam")  # Opti-CAM and the Conceptor-CAM wrapper over it
    options = {"iterations": 4} if optimising or method == "extremal-perturbation" else {}
    out = explainer.explain(tiny_images, method=method, **options)
    n = len(tiny_images)
    assert out.method == method and out.backend == ("ort-cpu" if backend == "ort" else "torch")
    check.assert_valid_maps(out.maps, n, tiny.INPUT_SIZE)
    logits, _ = tiny_ort.predict(tiny_images)
    np.testing.assert_array_equal(out.targets, logits.argmax(axis=1))  # targets=None is top-1
    assert out.targets.dtype.kind == "i"
    probs = softmax(logits, axis=1)[np.arange(n), out.targets]
    np.testing.assert_allclose(out.scores, probs, rtol=1e-5)
    masked = tiny_ort.predict_proba(tiny_images * out.maps[:, None])[np.arange(n), out.targets]
    np.testing.assert_allclose(out.masked_scores, masked, rtol=1e-4, atol=1e-6)
    assert out.class_names == [f"class-{t}" for t in out.targets]
    assert out.seconds > 0
    if method == "extremal-perturbation":
        assert out.trace.shape == (n, 4) and np.isfinite(out.trace).all()
    elif optimising:
        assert out.trace.shape == (n, 4) and np.isfinite(out.trace).all()
        np.testing.assert_array_equal(out.iterations, [4] * n)
        rec = out.record(0)
        assert rec["iterations"] == 4 and rec["steps"] == 4 and rec["final_loss"] == pytest.approx(float(out.trace[0, 3]))
    else:
        assert out.trace is None and out.iterations is None
        assert "iterations" not in out.record(0)
    rec = out.record(1)
    assert rec["target"] == int(out.targets[1]) and rec["score"] == pytest.approx(float(out.scores[1]))


def test_explicit_targets_are_honoured(tiny_ort, tiny_images):
    top1 = tiny_ort.explain(tiny_images, "grad-cam")
    targets = np.array([(t + 1) % 7 for t in top1.targets])
    out = tiny_ort.explain(tiny_images, "grad-cam", targets=targets)
    np.testing.assert_array_equal(out.targets, targets)
    probs = tiny_ort.predict_proba(tiny_images)[np.arange(len(targets)), targets]
    np.testing.assert_allclose(out.scores, probs, rtol=1e-5)
    assert np.abs(out.maps - top1.maps).max() > 0.1
    # one int for the whole batch; a list works too
    same = tiny_ort.explain(tiny_images, "grad-cam", targets=2)
    np.testing.assert_array_equal(same.targets, [2] * len(tiny_images))
    listed = tiny_ort.explain(tiny_images, "grad-cam", targets=[2] * len(tiny_images))
    np.testing.assert_array_equal(listed.maps, same.maps)


def test_explicit_targets_torch_backend(tiny_torch, tiny_ort, tiny_images, tol):
    targets = [3, 0, 6, 2]
    a = tiny_torch.explain(tiny_images, "grad-cam", targets=targets)
    b = tiny_ort.explain(tiny_images, "grad-cam", targets=targets)
    np.testing.assert_array_equal(a.targets, targets)
    assert np.abs(a.maps - b.maps).max() <= tol.TINY_MAP_ATOL


def test_opticam_maps_rebuild_from_u(tiny_ort, tiny_images):
    from opticam_rt.kernels import opticam_forward

    out = tiny_ort.explain(tiny_images, "opti-cam", iterations=3)
    _, features = tiny_ort.predict(tiny_images)
    maps, _, _ = opticam_forward(features, out.u, tiny_images)
    np.testing.assert_array_equal(maps, out.maps)


def test_predict_shapes(tiny_ort, tiny_images, tiny):
    logits, features = tiny_ort.predict(tiny_images)
    assert logits.shape == (4, tiny.NUM_CLASSES) and features.shape == (4, tiny.K, 8, 8)
    np.testing.assert_allclose(tiny_ort.predict_proba(tiny_images).sum(axis=1), 1, rtol=1e-5)


def test_auto_backend_picks_the_measured_cpu_order_per_method(tiny_bundle, tiny_images):
    """No GPU here: auto takes, per method, the first available backend of its cpu_order, and every
    Explanation names the backend that computed it."""
    from opticam_rt.runtime.runners import is_available

    with Explainer(tiny_bundle.path) as explainer:  # a directory works as well as a Bundle
        assert explainer.backend == "auto" and explainer.input_size == (32, 32)
        for method in ("opti-cam", "grad-cam", "score-cam"):
            expected = next(b for b in REGISTRY[method].cpu_order if is_available(b))
            assert resolve_backend("auto", method) == expected
            out = explainer.explain(tiny_images[:1], method, **({"iterations": 1} if method.endswith("opti-cam") or method == "extremal-perturbation" else {}))
            assert out.backend == expected


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [(3, 32, 32), (2, 3, 16, 16), (2, 1, 32, 32), (2, 32, 32, 3)],
    ids=("no-batch", "wrong-size", "one-channel", "channels-last"),
)
def test_wrong_image_shape(shape, tiny_ort):
    with pytest.raises(InputError, match=r"\(N, 3, 32, 32\)") as info:
        tiny_ort.explain(np.zeros(shape, dtype=np.float32), "grad-cam")
    assert str(shape).replace(" ", "") in str(info.value).replace(" ", "")


def test_pixels_out_of_range(tiny_ort, tiny_images):
    with pytest.raises(InputError, match=r"\[0, 1\].*255"):
        tiny_ort.explain(tiny_images * 255, "grad-cam")
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        tiny_ort.explain(tiny_images - 0.5, "grad-cam")
    bad = tiny_images.copy()
    bad[1, 0, 3, 3] = np.nan  # NaN compares False with both bounds: must still be refused
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        tiny_ort.explain(bad, "grad-cam")


@pytest.mark.parametrize("backend", ("ort", "torch"))
def test_target_out_of_range_names_class_and_image(backend, tiny_ort, tiny_torch, tiny_images):
    explainer = tiny_ort if backend == "ort" else tiny_torch
    with pytest.raises(InputError, match=r"target class 9 of image 2 is out of range.*0\.\.6"):
        explainer.explain(tiny_images, "grad-cam", targets=[0, 1, 9, 2])
    with pytest.raises(InputError, match=r"target class -1 of image 0"):
        explainer.explain(tiny_images, "grad-cam", targets=-1)
    with pytest.raises(InputError, match=r"one class index per image \(4\)"):
        explainer.explain(tiny_images, "grad-cam", targets=[0, 1])


def test_non_integer_target(tiny_ort, tiny_images):
    with pytest.raises(InputError, match=r"target class 1.5 of image 0"):
        tiny_ort.explain(tiny_images, "grad-cam", targets=[1.5, 1, 1, 1])


def test_unknown_method(tiny_ort, tiny_images):
    with pytest.raises(InputError, match=r"unknown method 'gradcam'.*grad-cam"):
        tiny_ort.explain(tiny_images, "gradcam")


def test_bad_opticam_options(tiny_ort, tiny_images):
    with pytest.raises(InputError, match="pipeline"):
        tiny_ort.explain(tiny_images, "opti-cam", iterations=2, pipeline="fast")
    with pytest.raises(InputError, match="loss"):
        tiny_ort.explain(tiny_images, "opti-cam", iterations=2, loss="l2")
    with pytest.raises(InputError, match="iterations"):
        tiny_ort.explain(tiny_images, "opti-cam", iterations=0)


def test_unknown_backend(tiny_bundle):
    with pytest.raises(BackendUnavailableError, match=r"unknown backend 'cuda'.*ort-cuda"):
        Explainer(tiny_bundle, backend="cuda")


@pytest.mark.parametrize("backend", ("ort-cuda", "ort-trt"))
def test_gpu_backends_unavailable_on_cpu(backend, tiny_bundle):
    import onnxruntime

    provider = {"ort-cuda": "CUDAExecutionProvider", "ort-trt": "TensorrtExecutionProvider"}[backend]
    if provider in onnxruntime.get_available_providers():
        pytest.skip(f"{provider} is installed here")
    with pytest.raises(BackendUnavailableError) as info:
        Explainer(tiny_bundle, backend=backend)
    message = str(info.value)
    assert provider in message and "pip install" in message and "onnxruntime-gpu" in message
    if backend == "ort-trt":
        assert "TensorRT" in message
    assert isinstance(info.value, OpticamError)
