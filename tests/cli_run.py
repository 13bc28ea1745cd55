"""Run the console entry point in-process, as a user's shell would, for the CLI tests."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from opticam_rt.cli import main


def run_main(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    """``opticam-rt ARGS...`` -> (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["opticam-rt", *map(str, args)])
    with pytest.raises(SystemExit) as info:
        main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def random_photo(path: Path, size: tuple[int, int] = (40, 40), seed: int = 0) -> Path:
    """A PNG of random pixels, (height, width) = ``size``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path
