"""The explainer graphs (one ONNX file per method) against the Explainer's host pipeline, on the tiny net.

The host path (each method's host class in opticam_rt/methods and the NumPy kernels) is the independent
computation: the graphs re-implement its arithmetic in ONNX ops, so every quantity is compared.
"""

from __future__ import annotations

import numpy as np
import pytest

from opticam_rt.errors import BundleError, InputError
from opticam_rt.export.explainer_graphs import EXPLAINER_GRAPHS

DETERMINISTIC = [m for m in EXPLAINER_GRAPHS if m != "opti-cam"]


@pytest.fixture(scope="module")
def graph_explainer(tiny_bundle):
    from opticam_rt.runtime.embedded import GraphExplainer

    return GraphExplainer(tiny_bundle, threads=1)  # single-threaded like the suite's other sessions


def _assert_same_outputs(out, host, tol) -> None:
    np.testing.assert_array_equal(out.target, host.targets)
    np.testing.assert_allclose(out.map, host.maps, rtol=0, atol=tol.TINY_MAP_ATOL)
    np.testing.assert_allclose(out.score, host.scores, rtol=0, atol=tol.TINY_MAP_ATOL)
    np.testing.assert_allclose(out.masked_score, host.masked_scores, rtol=0, atol=tol.TINY_MAP_ATOL)


@pytest.mark.parametrize("method", DETERMINISTIC)
def test_deterministic_graphs_equal_the_explainer(method, graph_explainer, tiny_ort, tiny_images, tol, check) -> None:
    out = graph_explainer.run(tiny_images, method)
    host = tiny_ort.explain(tiny_images, method=method)
    check.assert_valid_maps(out.map, len(tiny_images), tiny_ort.input_size)
    _assert_same_outputs(out, host, tol)
    logits, _ = tiny_ort.predict(tiny_images)
    np.testing.assert_allclose(out.logits, logits, rtol=0, atol=tol.TINY_MAP_ATOL)
    assert out.loss is None and out.steps is None


@pytest.mark.parametrize("method", ["grad-cam", "score-cam", "ablation-cam"])
def test_explicit_targets_and_chunks(method, graph_explainer, tiny_ort, tiny_images, tiny, tol) -> None:
    """Chosen (not top-1) classes; chunk 3 over K = 8 channels: three loop trips, the last one partial."""
    targets = np.arange(len(tiny_images)) % tiny.NUM_CLASSES
    options = {"chunk": 3} if method != "grad-cam" else {}
    out = graph_explainer.run(tiny_images, method, targets, **options)
    _assert_same_outputs(out, tiny_ort.explain(tiny_images, method=method, targets=targets), tol)


def test_opticam_few_steps_equal_host_loop(graph_explainer, tiny_ort, tiny_images, tol) -> None:
    """Three Adam steps: too few for rounding to be amplified, so the host loop is matched tightly."""
    out = graph_explainer.run(tiny_images, "opti-cam", iterations=3)
    host = tiny_ort.explain(tiny_images, method="opti-cam", iterations=3)
    _assert_same_outputs(out, host, tol)
    np.testing.assert_allclose(out.loss.T, host.trace, rtol=tol.STEP_RTOL)
    np.testing.assert_array_equal(out.steps, [3] * len(tiny_images))


def test_opticam_defaults_match_the_paper_run(graph_explainer, tiny_ort, tiny_images, tol, check) -> None:
    """Only the image fed: 100 steps at lr 0.1, every step run; the host loop's trace and maps."""
    out = graph_explainer.run(tiny_images, "opti-cam")
    host = tiny_ort.explain(tiny_images, method="opti-cam", iterations=100, lr=0.1)
    check.assert_valid_maps(out.map, len(tiny_images), tiny_ort.input_size)
    assert out.loss.shape == (100, len(tiny_images))
    np.testing.assert_array_equal(out.steps, host.iterations)
    assert check.correlations(out.map, host.maps).min() >= tol.LOOP_MAP_CORR
    np.testing.assert_allclose(out.loss.T, host.trace, rtol=tol.LOOP_TRACE_RTOL)
    np.testing.assert_array_equal(out.target, host.targets)


def test_opticam_early_stopping_follows_the_host_rule(graph_explainer, tiny_ort, tiny_images, tol) -> None:
    """tol/patience: the same steps per image as the host loop, NaN loss after stopping, u frozen."""
    options = {"iterations": 60, "lr": 0.1, "tol": 2e-3, "patience": 3}
    out = graph_explainer.run(tiny_images, "opti-cam", **options)
    host = tiny_ort.explain(tiny_images, method="opti-cam", **options)
    assert (host.iterations < 60).any(), "the case must stop some image early"
    np.testing.assert_array_equal(out.steps, host.iterations)
    for i, used in enumerate(out.steps):
        assert np.isfinite(out.loss[:used, i]).all() and np.isnan(out.loss[used:, i]).all()
    np.testing.assert_allclose(out.map, host.maps, rtol=0, atol=1e-3)


def test_explain_returns_an_explanation(graph_explainer, tiny_images) -> None:
    e = graph_explainer.explain(tiny_images[:2], "opti-cam", iterations=4)
    assert e.backend == "graph" and e.trace.shape == (2, 4) and list(e.iterations) == [4, 4]
    assert e.class_names == [graph_explainer.bundle.class_name(int(t)) for t in e.targets]


def test_wrapper_names_bad_input(graph_explainer, tiny_images, tiny) -> None:
    with pytest.raises(InputError, match=r"shape \(N, 3, 32, 32\)"):
        graph_explainer.run(tiny_images[:, :, :16], "grad-cam")
    with pytest.raises(InputError, match=f"target class {tiny.NUM_CLASSES} of image 1 is out of range"):
        graph_explainer.run(tiny_images[:2], "grad-cam", [0, tiny.NUM_CLASSES])
    with pytest.raises(InputError, match="target class -2 of image 0"):
        graph_explainer.run(tiny_images[:1], "grad-cam", -2)
    with pytest.raises(InputError, match="no option 'iterations'; it takes no options"):
        graph_explainer.run(tiny_images[:1], "grad-cam", iterations=3)
    with pytest.raises(InputError, match="iterations must be an integer >= 1"):
        graph_explainer.run(tiny_images[:1], "opti-cam", iterations=0)
    with pytest.raises(InputError, match="lr must be a finite number > 0"):
        graph_explainer.run(tiny_images[:1], "opti-cam", lr=0.0)
    with pytest.raises(BundleError, match="no explainer graph for 'nope'"):
        graph_explainer.run(tiny_images[:1], "nope")


@pytest.mark.parametrize("target", [7, -2])
def test_graph_itself_rejects_an_out_of_range_target(graph_explainer, tiny_images, tiny, target) -> None:
    """A caller without the wrapper still gets an error from the runtime, not a silent map."""
    assert tiny.NUM_CLASSES == 7
    session = graph_explainer.session("grad-cam")
    with pytest.raises(Exception, match="(?i)out of (range|bounds)|indices"):
        session.run(None, {"image": tiny_images[:1], "target": np.array([target], dtype=np.int64)})


def test_graph_itself_rejects_a_wrong_image_shape(graph_explainer, tiny_images) -> None:
    session = graph_explainer.session("opti-cam")
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"image": tiny_images[:1, :, :16]})


# --- the same graphs through the Explainer (engine="graph") and the CLI ---------------------


@pytest.fixture(scope="module")
def tiny_graph_engine(tiny_bundle):
    from opticam_rt.runtime import Explainer

    with Explainer(tiny_bundle, backend="ort-cpu", engine="graph") as explainer:
        yield explainer


@pytest.mark.parametrize("method", ["grad-cam", "layer-cam", "score-cam", "fake-cam"])
def test_graph_engine_gives_the_host_maps(method, tiny_graph_engine, tiny_ort, tiny_images, tol) -> None:
    a = tiny_graph_engine.explain(tiny_images, method)
    b = tiny_ort.explain(tiny_images, method)
    assert a.engine == "graph" and b.engine == "host" and a.backend == "ort-cpu"
    np.testing.assert_array_equal(a.targets, b.targets)
    assert np.abs(a.maps - b.maps).max() <= tol.TINY_MAP_ATOL
    np.testing.assert_allclose(a.masked_scores, b.masked_scores, rtol=1e-4, atol=1e-5)


def test_graph_engine_runs_opticam_with_the_declared_options(tiny_graph_engine, tiny_ort, tiny_images, tol) -> None:
    a = tiny_graph_engine.explain(tiny_images, "opti-cam", iterations=3, lr=0.05)
    b = tiny_ort.explain(tiny_images, "opti-cam", iterations=3, lr=0.05)
    assert a.trace.shape == (len(tiny_images), 3) and list(a.iterations) == [3] * len(tiny_images)
    assert np.abs(a.maps - b.maps).max() <= 1e-3, "3 Adam steps: graph and host loop agree closely"
    assert a.options["lr"] == 0.05 and a.record(0)["engine"] == "graph"


def test_graph_engine_refuses_what_the_graph_cannot_do(tiny_bundle, tiny_graph_engine, tiny_images) -> None:
    from opticam_rt.errors import InputError
    from opticam_rt.runtime import Explainer

    with pytest.raises(InputError, match=r"backend 'ort-cpu' cannot honour opti-cam option\(s\) loss"):
        tiny_graph_engine.explain(tiny_images, "opti-cam", iterations=2, loss="diff")
    with pytest.raises(InputError, match="engine 'graph' runs under ONNX Runtime"):
        Explainer(tiny_bundle, backend="ov-cpu", engine="graph").explain(tiny_images, "grad-cam")
    with pytest.raises(InputError, match="unknown engine 'loop'"):
        Explainer(tiny_bundle, engine="loop")


def test_cli_explain_with_the_graph_engine(tiny_bundle, tiny_images, tmp_path) -> None:
    import json

    from click.testing import CliRunner
    from PIL import Image

    from opticam_rt.cli import cli

    photo = tmp_path / "p.png"
    Image.fromarray((tiny_images[0].transpose(1, 2, 0) * 255).astype(np.uint8)).save(photo)
    result = CliRunner().invoke(cli, ["explain", str(photo), "--bundle", str(tiny_bundle.path), "--method", "grad-cam",
                                      "--engine", "graph", "--out", str(tmp_path / "o"), "--format", "json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["engine"] == "graph" and np.load(record["map"]).shape == tiny_images.shape[2:]


def test_loading_the_graphs_logs_no_initializer_warning(tiny_bundle, tiny_images, capfd) -> None:
    """ONNX Runtime logs "Initializer X appears in graph inputs" once per option input (each is an
    input with its default as a same-name initializer, docs/decisions.md) at its default
    severity; the GraphExplainer's sessions do not."""
    import onnxruntime as ort

    from opticam_rt.runtime.embedded import GraphExplainer

    path = str(tiny_bundle.path / "explain_opti_cam.onnx")
    ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert "appears in graph inputs" in capfd.readouterr().err  # what a consumer at severity 2 sees
    explainer = GraphExplainer(tiny_bundle, threads=1)
    explainer.run(tiny_images[:1], "grad-cam")
    explainer.run(tiny_images[:1], "opti-cam", iterations=2)
    assert "appears in graph inputs" not in capfd.readouterr().err
