"""Shared exports of the export tests (tolerances and helpers: export_helpers.py).

Each tiny net of ``nets.TINY_NETS`` is exported once per session (tens of seconds each on
2 cores) and shared by every test that asks ``tiny_bundle(name)``.
"""

from __future__ import annotations

from typing import Callable

import pytest
from export_helpers import ort_session


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Callable[[str], tuple]:
    """``tiny_bundle(name)`` -> (Bundle, VerificationReport) of ``nets.TINY_NETS[name]``, exported
    on first use with verify=True and class names ``c0, c1, ...``."""
    from nets import TINY_NETS

    from opticam_rt.export import export_bundle

    cache: dict[str, tuple] = {}

    def get(name: str) -> tuple:
        if name not in cache:
            net = TINY_NETS[name]
            out = tmp_path_factory.mktemp(f"tiny-{name}") / "bundle"
            cache[name] = export_bundle(
                net.build(),
                out,
                tap=net.tap,
                input_size=net.input_size,
                mean=net.mean,
                std=net.std,
                class_names=[f"c{i}" for i in range(net.num_classes)],
                model_name=name,
                model_spec=f"nets:{net.build.__name__}",  # so the torch runner can rebuild it
                verify=True,
            )
        return cache[name]

    return get


@pytest.fixture(scope="session")
def sessions(tiny_bundle) -> Callable[[str, str], object]:
    """``sessions(net, graph)`` -> a cached onnxruntime CPU session of that bundle graph."""
    cache: dict[tuple[str, str], object] = {}

    def get(net: str, graph: str):
        if (net, graph) not in cache:
            bundle, _ = tiny_bundle(net)
            cache[net, graph] = ort_session(bundle.graph_path(graph))
        return cache[net, graph]

    return get
