"""Channels-last taps: a (N, H, W, C) output (Swin's ``norm``) is read as C channels on H x W.

The layout is detected where the shapes tell (a last dimension equal to the LayerNorm's width)
and given with ``channels_last=True`` / ``--channels-last`` where they do not (a 4 x 4 x 4 map).
Grad-CAM is checked against a Grad-CAM written here on the tap's own (N, H, W, C) output with
PyTorch autograd in float64, on the H x W grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from arch_zoo import square_channels_last, tiny_swin

from opticam_rt.constants import NORM_EPS

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIZE = (32, 32)


def _norm_output_and_gradient(model: torch.nn.Module, images: np.ndarray, targets: np.ndarray) -> tuple:
    """In float64: ``norm``'s output A (N, H, W, C) and the target logits' gradient dy/dA."""
    net = model.double().eval()
    x = torch.from_numpy(images).double()
    x = (x - torch.tensor(MEAN, dtype=torch.float64).reshape(1, 3, 1, 1)) / torch.tensor(STD, dtype=torch.float64).reshape(1, 3, 1, 1)
    seen: list[torch.Tensor] = []
    handle = net.norm.register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        logits = net(x)
    finally:
        handle.remove()
    (grads,) = torch.autograd.grad(logits[torch.arange(len(targets)), torch.from_numpy(targets)].sum(), seen[0])
    return seen[0], grads


def _upsample_normalise(cam: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N, h, w) -> (bilinear to SIZE, per-image min-max (N, *SIZE), the cam itself)."""
    up = F.interpolate(cam[:, None], size=SIZE, mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
    return ((up - lo) / (hi - lo + NORM_EPS)).detach().numpy(), cam.detach().numpy()


def _gradcam_channels_last(model: torch.nn.Module, images: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Grad-CAM on ``norm``'s (N, H, W, C) output in float64: relu(sum_c mean_hw(dy/dA) A),
    bilinear upsample, per-image min-max. Returns (map, low-resolution cam (N, H, W))."""
    activations, grads = _norm_output_and_gradient(model, images, targets)
    weights = grads.mean(dim=(1, 2), keepdim=True)  # (N, 1, 1, C)
    return _upsample_normalise(torch.relu((weights * activations).sum(dim=3)))  # cam (N, H, W)


def _images(n: int, seed: int = 3) -> np.ndarray:
    return torch.rand(n, 3, *SIZE, generator=torch.Generator().manual_seed(seed)).numpy()


def test_layout_is_detected_where_the_last_dimension_is_the_channel_count():
    from opticam_rt.export.tap import map_layers

    rows = {name: (shape, layout) for name, shape, layout in map_layers(tiny_swin(), torch.zeros(1, 3, *SIZE))}
    shape, layout = rows["norm"]
    assert shape == (1, 4, 4, 16) and layout.channels_last is True and "LayerNorm(16)" in layout.reason
    assert rows["patch_embed"][1].channels_last is None  # (8, 8, 8): a conv whose shapes do not tell
    square = {name: layout for name, _, layout in map_layers(square_channels_last(), torch.zeros(1, 3, *SIZE))}
    assert square["norm"].channels_last is None and "assumed" in square["norm"].reason


def test_layout_detection_leaves_the_channels_first_families_alone():
    """No tap of the tiny family matrix changes: each auto tap still reads channels-first."""
    from arch_zoo import FAMILIES, calibrated

    from opticam_rt.export.tap import TapSpec, resolve_tap

    for name, family in FAMILIES.items():
        if family.token_tap:
            continue
        model = calibrated(family.tiny, family.tiny_size)
        spec, shape = resolve_tap(model, TapSpec.parse(family.tap_for(model)), torch.zeros(1, 3, *family.tiny_size))
        assert spec.channels_last is False, name


@pytest.fixture(scope="module")
def swin_bundle(tmp_path_factory):
    from opticam_rt.export import export_bundle

    return export_bundle(tiny_swin(), tmp_path_factory.mktemp("swin") / "b", "auto", SIZE, MEAN, STD,
                         model_spec="arch_zoo:tiny_swin", explainers=False)  # fmt: skip


def test_auto_tap_reads_swin_norm_as_channels_on_the_grid(swin_bundle):
    bundle, report = swin_bundle
    assert report, report.format()
    assert bundle.manifest.tap_layer == "norm@0"
    assert bundle.manifest.tap_shape == (16, 4, 4)
    assert bundle.manifest.tap_layout == "channels-last"


@pytest.mark.parametrize("backend", ["ort-cpu", "torch"])
def test_grad_cam_equals_a_pytorch_grad_cam_on_the_grid(swin_bundle, backend):
    from opticam_rt.runtime import Explainer

    bundle, _ = swin_bundle
    images = _images(3)
    with Explainer(bundle, backend=backend, threads=1) as explainer:
        result = explainer.explain(images, method="grad-cam")
    expected, cam = _gradcam_channels_last(tiny_swin(), images, result.targets)
    assert cam.shape == (3, 4, 4)
    assert np.corrcoef(result.maps.ravel(), expected.ravel())[0, 1] > 0.999999
    np.testing.assert_allclose(result.maps, expected, atol=1e-4)


def test_layers_shows_the_layout_and_export_takes_the_flag(tmp_path, monkeypatch):
    """norm is (N, 4, 4, 4) in square_channels_last: layers says channels-first is assumed; the
    export with --channels-last gives the Grad-CAM of the channels-last map."""
    from click.testing import CliRunner

    from opticam_rt.cli import cli as main
    from opticam_rt.export import build_graphs
    from opticam_rt.runtime import Explainer

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    runner = CliRunner()
    data = json.loads(runner.invoke(main, ["layers", "--model", "arch_zoo:tiny_swin", "--input-size", "32",
                                           "--format", "json"]).stdout)  # fmt: skip
    norm = next(row for row in data if row["layer"] == "norm")
    assert norm["shape"] == [4, 4, 16] and norm["layout"] == "channels-last" and norm["features"] == [16, 4, 4]
    assert norm.get("auto") is True
    text = runner.invoke(main, ["layers", "--model", "arch_zoo:square_channels_last", "--input-size", "32"]).stdout
    line = next(x for x in text.splitlines() if x.startswith("norm "))
    assert "channels-first" in line and "--channels-last if not" in line
    _, default, _ = build_graphs(square_channels_last(), "norm", SIZE, MEAN, STD)
    assert default.channels_last is False  # what an export without the flag would read

    out = tmp_path / "b"
    done = runner.invoke(main, ["export", "--model", "arch_zoo:square_channels_last", "--layer", "norm",
                                "--input-size", "32", "--mean", ",".join(map(str, MEAN)), "--std",
                                ",".join(map(str, STD)), "--channels-last", "--no-verify", "--no-explainers",
                                "-o", str(out)])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert json.loads((out / "manifest.json").read_text())["tap_layout"] == "channels-last"
    from opticam_rt.bundle import load_bundle

    images = _images(2, seed=4)
    with Explainer(load_bundle(out), backend="ort-cpu", threads=1) as explainer:
        result = explainer.explain(images, method="grad-cam")
    expected, _ = _gradcam_channels_last(square_channels_last(), images, result.targets)
    np.testing.assert_allclose(result.maps, expected, atol=1e-4)
    # the same map read channels-first (4 "channels" of 4 x 4) is another map
    wrong, _ = _gradcam_channels_first_reading(square_channels_last(), images, result.targets)
    assert np.abs(wrong - expected).max() > 0.1


def _gradcam_channels_first_reading(model: torch.nn.Module, images: np.ndarray, targets: np.ndarray) -> tuple:
    """Grad-CAM with norm's (N, H, W, C) output misread as (N, K=H, h=W, w=C)."""
    activations, grads = _norm_output_and_gradient(model, images, targets)
    return _upsample_normalise(torch.relu((grads.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1)))


def test_swin_t_widths_norm_is_768_channels_on_7_by_7():
    """Swin-T's widths at 224: ``norm`` outputs (1, 7, 7, 768); resolved as 768 channels on 7 x 7."""
    from arch_zoo import swin_t_widths

    from opticam_rt.export.tap import TapSpec, auto_tap, resolve_tap

    model = swin_t_widths()
    example = torch.zeros(1, 3, 224, 224)
    spec, token = auto_tap(model, example)
    assert str(spec) == "norm" and not token
    resolved, shape = resolve_tap(model, spec, example)
    assert resolved.channels_last is True and shape == (1, 768, 7, 7)
    assert resolve_tap(model, TapSpec("norm", channels_last=False), example)[1] == (1, 7, 7, 768)  # the flag wins
