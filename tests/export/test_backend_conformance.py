"""The conformance suite: every backend runs every bundle graph through the Runner contract
and matches the independent float64 PyTorch reference (tests/graph_reference.py).

A new backend is done, as far as graphs go, when it is in the registry and passes this file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import PARITY_RTOL, assert_close
from graph_reference import make_feeds, reference_for
from nets import TINY_NETS

from opticam_rt.bundle import GRAPH_SIGNATURES
from opticam_rt.errors import InputError
from opticam_rt.runtime.runners import RUNNERS, create_runner, is_available

#: Every registered backend; the GPU ones are marked `gpu` and skip where their provider is missing.
BACKENDS = [pytest.param(name, marks=pytest.mark.gpu) if entry.gpu else name for name, entry in RUNNERS.items()]


@pytest.fixture(scope="module")
def runners(tiny_bundle):
    """``runners(backend, net)`` -> an active runner, created once per module."""
    made: dict[tuple[str, str], object] = {}

    def get(backend: str, net_name: str):
        if not is_available(backend):
            pytest.skip(f"backend {backend} is not installed")
        if (backend, net_name) not in made:
            made[backend, net_name] = create_runner(backend, tiny_bundle(net_name)[0], threads=1).activate()
        return made[backend, net_name]

    yield get
    for runner in made.values():
        runner.deactivate()


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("graph", list(GRAPH_SIGNATURES))
@pytest.mark.parametrize("net_name", list(TINY_NETS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_runs_every_graph_like_pytorch(backend: str, net_name: str, graph: str, batch: int, runners) -> None:
    net = TINY_NETS[net_name]
    reference = reference_for(net_name)
    feeds = make_feeds(net, reference, batch)[graph]
    got = runners(backend, net_name).infer(graph, feeds)
    inputs = [torch.from_numpy(feeds[n]).double() for n in GRAPH_SIGNATURES[graph][0]]
    expected = [t.detach().numpy() for t in getattr(reference, graph)(*inputs)]
    assert list(got) == list(GRAPH_SIGNATURES[graph][1])
    for (name, a), e in zip(got.items(), expected):
        assert a.dtype == np.float32 and a.shape == e.shape, f"{backend} {graph}.{name}: {a.dtype} {a.shape} vs {e.shape}"
        assert_close(a, e, PARITY_RTOL, what=f"{backend} {net_name} {graph}.{name} batch {batch}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_checks_feeds_before_running(backend: str, runners) -> None:
    """Wrong names and shapes are refused by the contract, naming the input and both shapes."""
    runner = runners(backend, "conv")
    feeds = make_feeds(TINY_NETS["conv"], reference_for("conv"), 1)["opticam_step"]
    with pytest.raises(InputError, match="takes inputs"):
        runner.infer("opticam_step", {k: v for k, v in feeds.items() if k != "u"})
    with pytest.raises(InputError, match=r"input 'u' must have shape \(N, 8\), got \(1, 7\)"):
        runner.infer("opticam_step", {**feeds, "u": feeds["u"][:, :7]})
    with pytest.raises(InputError, match="unknown graph"):
        runner.infer("backward", feeds)
