"""Checks of computed results: a non-finite saliency map is reported with its likely cause."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from opticam_rt.errors import NumericalError


def check_finite_maps(maps: np.ndarray, method: str, options: Mapping[str, Any], verification: Any) -> None:
    """Raise NumericalError when ``maps`` (N, H, W) holds NaN or infinity, naming the likely cause.

    ``verification`` is the bundle manifest's verification record (None when not verified).
    The causes are tried in order: an option that is not a finite number (e.g. ``lr=nan``), a
    bundle whose parity check failed or did not finish at export, and otherwise non-finite model
    outputs (weights changed after loading, or a numerically unstable model).
    """
    bad = ~np.isfinite(np.asarray(maps).reshape(len(maps), -1)).all(axis=1)
    if not bad.any():
        return
    images = ", ".join(str(i) for i in np.flatnonzero(bad)[:8]) + (" ..." if bad.sum() > 8 else "")
    odd = [f"{k}={v!r}" for k, v in options.items() if isinstance(v, float) and not math.isfinite(v)]
    if odd:
        cause = f"option {', '.join(odd)} is not a finite number"
    elif isinstance(verification, Mapping) and verification.get("passed") is False:
        cause = "the bundle FAILED its parity check at export; re-export it (see its verification report)"
    elif isinstance(verification, Mapping) and "passed" not in verification:
        cause = "the bundle's parity check at export did not finish; re-export it"
    else:
        cause = "the model gave non-finite values (weights changed after loading, or a numerically unstable model)"
    raise NumericalError(f"{method} map of image(s) {images} is not finite (NaN or infinity): {cause}")
