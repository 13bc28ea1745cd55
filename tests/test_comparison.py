"""The comparison figure: titled columns, class names and scores on every row, equal cells."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from opticam_rt.comparison import ComparisonRow, draw_comparison, save_comparison

METHODS = ("grad-cam", "opti-cam")


def _rows() -> list[ComparisonRow]:
    rng = np.random.default_rng(0)
    landscape = rng.integers(0, 255, (60, 120, 3), dtype=np.uint8)
    portrait = rng.integers(0, 255, (150, 50, 3), dtype=np.uint8)
    rows = []
    for label, photo, name in (("wide", landscape, "tabby cat"), ("tall", portrait, "lighthouse")):
        cells = {m: (photo.copy(), 0.5 + 0.1 * i, 0.25 + 0.1 * i) for i, m in enumerate(METHODS)}
        rows.append(ComparisonRow(label, photo, name, cells, top=[(name, 0.61), ("other", 0.2), ("third", 0.1)]))
    return rows


def test_columns_are_titled_and_rows_carry_class_names_and_scores():
    pytest.importorskip("matplotlib")
    fig = draw_comparison(_rows(), METHODS)
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_title() for ax in axes[0]] == ["photo", "grad-cam", "opti-cam"]
    assert [ax.get_title() for ax in axes[1]] == ["", "", ""]  # titles once, on top
    assert axes[0, 0].get_ylabel() == "wide\nclass: tabby cat"
    assert axes[1, 0].get_ylabel() == "tall\nclass: lighthouse"
    assert axes[1, 0].get_xlabel() == "top: lighthouse 0.61\nother 0.20, third 0.10"
    assert axes[0, 1].get_xlabel() == "p 0.500 | masked p 0.250"
    assert axes[1, 2].get_xlabel() == "p 0.600 | masked p 0.350"


def test_a_portrait_photo_gets_a_cell_as_large_as_a_landscape_one():
    pytest.importorskip("matplotlib")
    fig = draw_comparison(_rows(), METHODS)
    fig.canvas.draw()
    boxes = [ax.get_window_extent() for ax in fig.axes]
    sizes = {(round(b.width), round(b.height)) for b in boxes}
    assert len(sizes) == 1, sizes  # every cell the same size, no blank strip after a narrow row
    images = [ax.get_images()[0].get_array() for ax in fig.axes]
    assert {im.shape for im in images} == {(256, 256, 3)}


def test_written_png(tmp_path):
    pytest.importorskip("matplotlib")
    path, titled = save_comparison(_rows(), METHODS, tmp_path / "c.png")
    assert titled
    with Image.open(path) as img:
        assert img.size == (780, 570)  # 3 x 2.6 in by 2 x 2.6 + 0.5 in at 100 dpi


def test_without_matplotlib_the_panels_still_come_in_equal_cells(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path, titled = save_comparison(_rows(), METHODS, tmp_path / "c.png")
    assert not titled
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * 256 + 4, 3 * 256 + 2 * 4, 3)
    # the portrait photo sits centred in its cell: white on both sides, pixels in the middle
    tall = grid[260:, :256]
    assert (tall[:, :40] == 255).all() and (tall[:, -40:] == 255).all() and (tall[:, 100:150] != 255).any()
