"""Fixtures shared by the evaluation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture
def boxed_csv(tmp_path: Path) -> Path:
    """A labelled CSV (path,label,x0,y0,x1,y1) of three random 64 x 48 photos, each with its own box."""
    rng = np.random.default_rng(5)
    rows = ["path,label,x0,y0,x1,y1"]
    for i in range(3):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
        rows.append(f"{path},{i},{4 + 3 * i},{6},{40 + i},{30}")
    csv = tmp_path / "boxes.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv
