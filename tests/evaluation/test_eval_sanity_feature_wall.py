"""The walls paper's own measure (hidden_l2) and its own wall (the tap's cells zeroed after the tap)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_runtime_net as tiny
from opticam_rt.bundle import load_bundle
from opticam_rt.evaluation.sanity import (
    CONTROL,
    FeatureWalledModel,
    SanityModel,
    SanityRecords,
    WallSettings,
    hidden_l2,
    run_wall,
    summarise_wall,
)
from opticam_rt.evaluation.sanity.wall import feature_cells, hidden_mask, walled_tap
from opticam_rt.export.tap import TapSpec, tapped
from opticam_rt.runtime.explainer import Explainer

SPEC = f"{Path(tiny.__file__).resolve()}:make"


def test_hidden_l2_is_the_norm_ratio():
    maps = np.zeros((2, 2, 2))
    maps[0] = [[3, 0], [4, 0]]  # bottom row holds 4 of the norm 5
    hidden = np.array([[False, False], [True, True]])
    np.testing.assert_allclose(hidden_l2(maps, hidden)[:1], [0.8])
    assert np.isnan(hidden_l2(maps, hidden)[1])  # an all-zero map has no ratio


def _parts(model: torch.nn.Module, x: torch.Tensor, visible: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Written out for TinyNet: the tap's map, and the logits of the head fed the walled map."""
    a = model.tap(model.conv(model.stem(x)))
    return a, model.fc(model.head(a * visible))


def test_feature_wall_hides_cells_from_the_head_but_not_from_the_tap():
    model = tiny.make()
    cells, dead = feature_cells((0.0, 0.5, 1.0, 1.0), (8, 8))
    assert cells[4:].all() and not cells[:4].any() and dead == (0.0, 0.5, 1.0, 1.0)
    walled = FeatureWalledModel(model, tiny.TAP, cells).eval()
    x = torch.rand(3, 3, *tiny.INPUT_SIZE)
    visible = torch.from_numpy(~cells).float()
    with torch.no_grad():
        a, logits = _parts(model, x, visible)
        with tapped(walled, TapSpec.parse(walled_tap(tiny.TAP))) as seen:
            out = walled(x)
        torch.testing.assert_close(out, logits)
        torch.testing.assert_close(seen[0], a)  # the methods see the bottom cells
        assert not torch.allclose(out, model(x))  # the wall changed the classifier
        # Replacing the tap's map (how the head graph is traced) also goes through the wall.
        other = torch.rand_like(a)
        with tapped(walled, TapSpec.parse(walled_tap(tiny.TAP)), replace=other):
            replaced = walled(x)
        torch.testing.assert_close(replaced, model.fc(model.head(other * visible)))


@pytest.fixture
def sanity_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTICAM_RT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_run_wall_with_the_papers_wall(sanity_cache, tmp_path):
    model = SanityModel.load(SPEC, layer=tiny.TAP, input_size=tiny.INPUT_SIZE, mean=tiny.MEAN, std=tiny.STD)
    rng = np.random.default_rng(3)
    images = {f"img{i}": rng.random((3, *tiny.INPUT_SIZE)).astype(np.float32) for i in range(3)}
    settings = WallSettings(methods=["grad-cam"], backend="ort-cpu", wall="features")
    records = run_wall(model, images, settings, SanityRecords(tmp_path / "w.jsonl"))
    summary = summarise_wall(records)
    assert summary["grad-cam"]["hidden_area"] == 0.5
    # The bundle is the feature-walled model, and the records measure its own maps.
    (directory,) = sanity_cache.glob("make.wall-*")
    stack = np.stack(list(images.values()))
    visible = torch.from_numpy(~feature_cells((0.0, 0.5, 1.0, 1.0), (8, 8))[0]).float()
    with Explainer(load_bundle(directory), backend="ort-cpu") as explainer:
        logits, _ = explainer.predict(stack)
        normalised = (torch.from_numpy(stack) - torch.tensor(tiny.MEAN)[:, None, None]) / torch.tensor(tiny.STD)[:, None, None]
        want = _parts(tiny.make(), normalised, visible)[1].detach().numpy()
        np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
        maps = explainer.explain(stack, method="grad-cam", targets=logits.argmax(1)).maps
    hidden = hidden_mask((0.0, 0.5, 1.0, 1.0), tiny.INPUT_SIZE)
    got = [r["hidden_l2"] for r in records["grad-cam"]]
    assert got == pytest.approx(hidden_l2(maps, hidden).tolist(), abs=1e-6)
    # Grad-CAM sees through this wall: it weighs the hidden cells of the map like the others.
    assert summary["grad-cam"]["hidden_l2"] > 0.3
    # Here no pixel of the lower half reaches a visible cell (the tap's receptive field ends at
    # row 15), so the model's own gradient is zero there; with a deeper net it would only be small.
    assert summary[CONTROL]["hidden_l2"] == 0.0
