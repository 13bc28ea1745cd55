"""Sanity checks without export: the wall wrapper, the hidden-region measures, the randomisation
cascade and the map similarities (against SciPy and scikit-image)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import nets
import tiny_runtime_net
from opticam_rt.errors import InputError
from opticam_rt.evaluation.sanity import (
    SanityRecords,
    WalledModel,
    cascade,
    format_randomisation,
    format_wall,
    hidden_mass,
    hidden_peak,
    parse_region,
    randomised,
    spearman,
    ssim,
    walled_tap,
)
from opticam_rt.evaluation.sanity.randomisation import parse_cascade
from opticam_rt.evaluation.sanity.wall import hidden_mask
from opticam_rt.export.tap import TapSpec, resolve_tap


@pytest.mark.parametrize("region", ["lower", "left", "0.25,0.1,0.8,0.6"])
def test_walled_model_ignores_hidden_pixels(region: str) -> None:
    """The output does not move when hidden pixels change, and does when visible ones change."""
    hidden = hidden_mask(parse_region(region), tiny_runtime_net.INPUT_SIZE)
    model = WalledModel(tiny_runtime_net.make(), hidden).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, *tiny_runtime_net.INPUT_SIZE, generator=g)
    noise = torch.rand(x.shape, generator=g) * 10 - 5
    mask = torch.from_numpy(hidden)
    with torch.no_grad():
        base = model(x)
        moved_hidden = model(torch.where(mask, noise, x))
        moved_visible = model(torch.where(mask, x, noise))
    torch.testing.assert_close(moved_hidden, base, rtol=0, atol=1e-6)
    assert (moved_visible - base).abs().max() > 1e-2


def test_hidden_mask_regions() -> None:
    lower = hidden_mask(parse_region("lower"), (10, 6))
    assert lower[5:].all() and not lower[:5].any()
    right = hidden_mask(parse_region("right"), (10, 6))
    assert right[:, 3:].all() and not right[:, :3].any()
    with pytest.raises(InputError, match="region 'middle'"):
        parse_region("middle")
    with pytest.raises(InputError, match="x0 < x1"):
        parse_region("0.5,0,0.2,1")


def test_walled_tap_resolves_inside_the_wrapper() -> None:
    """A plain tap and a shared module's call index both resolve to the same feature map."""
    for build, tap, size in ((tiny_runtime_net.make, "tap", (32, 32)), (nets.branch_net, "act@1", (24, 20))):
        model = build().eval()
        walled = WalledModel(model, np.zeros(size, dtype=bool) | (np.arange(size[0])[:, None] >= size[0] // 2))
        x = torch.rand(1, 3, *size)
        spec, shape = resolve_tap(walled, TapSpec.parse(walled_tap(tap)), x)
        _, own_shape = resolve_tap(model, TapSpec.parse(tap), x)
        assert spec.module_path.startswith("model.") and shape == own_shape


def test_hidden_mass_and_peak() -> None:
    hidden = np.zeros((4, 4), dtype=bool)
    hidden[2:] = True
    maps = np.stack([
        np.ones((4, 4)),                      # uniform: the hidden area's share
        np.where(hidden, 0.0, 1.0),           # nothing hidden
        np.where(hidden, 1.0, 0.0),           # everything hidden
        np.zeros((4, 4)),                     # no saliency at all
    ])
    maps[0, 3, 3] = 2.0  # peak in the hidden part
    mass = hidden_mass(maps, hidden)
    assert mass[0] == pytest.approx(maps[0][hidden].sum() / maps[0].sum())
    assert mass[1] == 0.0 and mass[2] == 1.0 and np.isnan(mass[3])
    assert hidden_peak(maps, hidden).tolist() == [True, False, True, False]


def test_cascade_goes_top_down_from_the_head() -> None:
    steps = cascade(tiny_runtime_net.make(), "tap", (32, 32))
    # TinyNet: stem -> conv (the tap's block) -> tap -> head -> fc
    assert [s.modules for s in steps] == [("fc",), ("head.0",), ("conv.0", "conv.1"), ("stem.0", "stem.1")]
    assert [s.above_tap for s in steps] == [True, True, False, False]


def test_randomised_changes_exactly_the_claimed_weights() -> None:
    model = tiny_runtime_net.make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = cascade(model, "tap", (32, 32))
    previous = None
    for k in range(1, len(steps) + 1):
        copy = randomised(model, steps[:k], seed=3)
        claimed = {m for s in steps[:k] for m in s.modules}
        for name, value in copy.state_dict().items():
            owner = name.rpartition(".")[0]
            if name.endswith("num_batches_tracked"):
                continue
            if owner in claimed:
                assert not torch.equal(value, before[name]), f"{name} should be re-initialised at step {k}"
            else:
                assert torch.equal(value, before[name]), f"{name} should be untouched at step {k}"
        if previous is not None:  # cumulative: the earlier steps' random values are kept
            earlier = {m for s in steps[: k - 1] for m in s.modules}
            for name, value in copy.state_dict().items():
                if name.rpartition(".")[0] in earlier:
                    assert torch.equal(value, previous[name])
        previous = copy.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), "the caller's model must stay untouched"


def test_parse_cascade() -> None:
    model = tiny_runtime_net.make()
    steps = parse_cascade("fc; head", model)
    assert [s.modules for s in steps] == [("fc",), ("head.0",)]
    with pytest.raises(InputError, match="holds no parameters"):
        parse_cascade("tap", model)


def test_similarity_matches_scipy_and_skimage() -> None:
    stats = pytest.importorskip("scipy.stats")
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.random((40, 36))
    b = np.clip(a + 0.4 * rng.random(a.shape) - 0.2, 0, 1)
    for x, y in ((a, b), (np.round(a * 4) / 4, np.round(b * 3) / 3)):  # with and without ties
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x.ravel(), y.ravel())[0], abs=1e-12)
        expected = metrics.structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                                 use_sample_covariance=False)
        assert ssim(x, y) == pytest.approx(expected, abs=1e-10)
    assert spearman(a, a) == pytest.approx(1.0) and ssim(a, a) == pytest.approx(1.0)
    assert np.isnan(spearman(np.ones((20, 20)), a[:20, :20]))


def test_records_resume_and_ignore_a_cut_line(tmp_path) -> None:
    store = SanityRecords(tmp_path / "r.jsonl")
    store.append([{"key": "k1", "image": "a", "v": 1}, {"key": "k2", "image": "a", "v": 2}])
    with store.path.open("a") as f:
        f.write('{"key": "k1", "image": "b"')  # a crash mid-line
    assert [r["v"] for r in store.for_key("k1")] == [1]
    store.append([{"key": "k1", "image": "b", "v": 3}])
    assert sorted(r["v"] for r in store.for_key("k1")) == [1, 3]
    assert all(json.loads(line) for line in store.path.read_text().splitlines())


def test_cli_rejects_unknown_method_and_region(tmp_path) -> None:
    from click.testing import CliRunner

    from opticam_rt.cli import cli

    image = tmp_path / "x.png"
    image.write_bytes(b"")
    for extra, message in ((["--methods", "grad-cam,nope"], "unknown method"), (["--region", "middle"], "region 'middle'")):
        with pytest.raises(InputError, match=message):
            CliRunner().invoke(cli, ["sanity", "wall", str(image), "--model", "efficientnet-lite0", *extra],
                               catch_exceptions=False)


def test_reports_in_every_format() -> None:
    wall = {"grad-cam": {"n_images": 2, "hidden_mass": 0.3, "hidden_peak": 0.5, "hidden_l2": 0.4, "hidden_area": 0.5},
            "input-gradient": {"n_images": 2, "hidden_mass": 0.0, "hidden_peak": 0.0, "hidden_l2": 0.0, "hidden_area": 0.5}}
    assert json.loads(format_wall(wall, "json")) == wall
    assert format_wall(wall, "csv").splitlines()[0] == "method,n_images,hidden_mass,hidden_peak,hidden_l2,hidden_area"
    assert "input-gradient" in format_wall(wall, "table")
    rand = {"grad-cam": {"n_images": 2, "steps": [{"step": 1, "randomised": "fc", "spearman": 0.5, "ssim": None}]}}
    assert json.loads(format_randomisation(rand, "json")) == rand
    assert format_randomisation(rand, "csv").splitlines()[1] == "grad-cam,1,fc,2,0.5,"
    assert "step 1: + fc" in format_randomisation(rand, "table")
