"""docs/embedding.md: its Python snippet runs with only onnxruntime and numpy, and gives the Explainer's map."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "embedding.md"
#: Opti-CAM map from the snippet (graph) against the host loop on the tiny net: correlation.
OPTI_CAM_CORR = 0.95

#: Runs the snippet in a process where importing opticam_rt fails.
GUARD = """
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opticam_rt" or name.startswith("opticam_rt."):
            raise ImportError("the embedding snippet must not need opticam_rt")
sys.meta_path.insert(0, Block())
runpy.run_path(sys.argv[1], run_name="__main__")
"""


def python_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/embedding.md has no python block"
    return blocks[0]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    import tiny_runtime_net

    return tiny_runtime_net.tiny_bundle_at(tmp_path_factory.getbasetemp())


def test_snippet_runs_without_opticam_rt(bundle, tmp_path) -> None:
    code = python_snippet()
    assert "opticam_rt" not in code
    (tmp_path / "bundle").symlink_to(bundle.path, target_is_directory=True)
    (tmp_path / "snippet.py").write_text(code)
    (tmp_path / "guard.py").write_text(GUARD)
    done = subprocess.run(
        [sys.executable, "guard.py", "snippet.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    target, score, masked, steps = done.stdout.split()
    saliency = np.load(tmp_path / "opticam-map.npy")
    assert saliency.shape == tuple(bundle.manifest.input_size) and 0 <= saliency.min() and saliency.max() <= 1

    from opticam_rt.runtime import Explainer

    h, w = bundle.manifest.input_size
    image = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)  # the snippet's image
    with Explainer(bundle, backend="ort-cpu", threads=1) as explainer:
        host = explainer.explain(image, "opti-cam", iterations=100)
    assert int(target) == int(host.targets[0]) and int(steps) == 100
    assert float(score) == pytest.approx(float(host.scores[0]), abs=1e-5)
    assert np.corrcoef(saliency.ravel(), host.maps[0].ravel())[0, 1] >= OPTI_CAM_CORR


def test_guard_blocks_opticam_rt(tmp_path) -> None:
    """The guard really stops an import of opticam_rt (else the test above would prove nothing)."""
    (tmp_path / "bad.py").write_text("import opticam_rt\n")
    (tmp_path / "guard.py").write_text(GUARD)
    done = subprocess.run([sys.executable, "guard.py", "bad.py"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "must not need opticam_rt" in done.stderr
