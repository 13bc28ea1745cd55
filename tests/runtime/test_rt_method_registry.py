"""A method registers once (``opticam_rt.methods``), and every engine and surface follows from it.

A registration that lacks a part (host, reference, graph, engine preference, summary) is refused
when it is made; a registered method shows up in the CLI, ``auto``, the graph export, the bundle
check, the ``torch`` backend and the server without any other table naming it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from opticam_rt.methods import REGISTRY, Method
from opticam_rt.methods.grad_cam import GradCAM, graph as grad_cam_graph, reference as grad_cam_reference
from opticam_rt.methods.opti_cam import OptiCAM, OptiCAMOptions
from opticam_rt.methods.options import option
from opticam_rt.methods.score_cam import ScoreCAM


def _complete(**change):
    fields = dict(name="grad-cam", host=GradCAM, reference=grad_cam_reference, graph=grad_cam_graph,
                  cpu_order=("ort-cpu",), summary="Grad-CAM.")
    fields.update(change)
    return Method(**fields)


def test_a_complete_registration_is_accepted():
    assert _complete().problems() == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"host": None}, "host must be a MethodImplementation subclass"),
        ({"host": ScoreCAM}, r"host ScoreCAM.name is 'score-cam'"),
        ({"reference": None}, "reference .* is missing"),
        ({"reference": lambda clf, images, size: {}}, "reference must take"),
        ({"reference": lambda clf, images, targets, size, steps=3: {}}, r"reference options \['steps'\] are not options"),
        ({"graph": None}, "graph .* is missing, and no_graph does not say why"),
        ({"cpu_order": ()}, "cpu_order .* is empty"),
        ({"summary": ""}, "summary is empty"),
        ({"graph_options": {"chunk": None}}, r"graph_options \['chunk'\] are not options"),
        ({"name": "Grad CAM"}, "must be a lower-case CLI word"),
    ],
)
def test_a_registration_lacking_a_part_is_refused(change, message):
    with pytest.raises(TypeError, match=message):
        _complete(**change)


def test_a_method_without_a_graph_must_say_why():
    assert _complete(graph=None, no_graph="its loop does not fit an ONNX Loop").graph is None


def test_every_registered_method_is_complete_and_named_once():
    files = [m.graph_file for m in REGISTRY.values()]
    assert len(set(files)) == len(files)
    for name, method in REGISTRY.items():
        assert method.problems() == [], name
        assert method.host.name == name


def test_every_surface_reads_the_registry():
    """The CLI's choices, the export's graphs, auto's orders, the server's models: all the registry."""
    import click

    from opticam_rt.cli import cli
    from opticam_rt.export.explainer_graphs import EXPLAINER_GRAPHS
    from opticam_rt.runtime import METHOD_NAMES
    from opticam_rt.runtime.runners import RUNNERS, cpu_order

    assert METHOD_NAMES == tuple(REGISTRY)
    explain = cli.get_command(click.Context(cli), "explain")
    (method_param,) = [p for p in explain.params if p.name == "method"]
    assert tuple(method_param.type.choices) == tuple(REGISTRY)
    assert set(EXPLAINER_GRAPHS) == {m for m, r in REGISTRY.items() if r.graph is not None}
    for name, record in REGISTRY.items():
        assert cpu_order(name) == record.cpu_order and set(record.cpu_order) <= set(RUNNERS)


def test_graph_inputs_take_their_defaults_from_the_options():
    """Defaults live once, in the Options dataclass; the graph's inputs read them (tol's unset is 0)."""
    record = REGISTRY["opti-cam"]
    defaults = record.Options()
    inputs = record.graph_inputs()
    assert inputs["iterations"] == (defaults.iterations, np.dtype(np.int64))
    assert inputs["lr"] == (defaults.lr, np.dtype(np.float32))
    assert inputs["tol"][0] == 0.0 and defaults.tol is None

    @dataclasses.dataclass(frozen=True)
    class Fewer(OptiCAMOptions):
        iterations: int = option(7, "fewer steps")

    class Host(OptiCAM):
        Options = Fewer

    changed = dataclasses.replace(record, host=Host)
    assert changed.graph_inputs()["iterations"] == (7, np.dtype(np.int64))


@pytest.mark.parametrize("method", ["hires-cam"])
def test_an_added_method_runs_on_every_engine(method, tiny_bundle, tiny_images, tmp_path):
    """HiResCAM was added as one module plus one line in the registry: the host engine on ONNX
    Runtime and OpenVINO, its explainer graph, and the torch backend (its reference) all compute it,
    and the bundle written by the exporter carries its graph."""
    from opticam_rt.runtime import Explainer

    assert method in tiny_bundle.manifest.explainers
    maps = {}
    for backend, engine in [("ort-cpu", "host"), ("ort-cpu", "graph"), ("torch", "host"), ("ov-cpu", "host")]:
        if backend == "ov-cpu":
            pytest.importorskip("openvino")
        with Explainer(tiny_bundle, backend=backend, engine=engine) as explainer:
            maps[(backend, engine)] = explainer.explain(tiny_images, method).maps
    reference = maps[("torch", "host")]
    for key, value in maps.items():
        assert np.isfinite(value).all() and value.shape == reference.shape
        assert np.abs(value - reference).max() < 1e-4, key
