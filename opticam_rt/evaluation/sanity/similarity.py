"""Map similarity for the randomisation test: Spearman rank correlation and SSIM, in NumPy."""

from __future__ import annotations

import numpy as np

from opticam_rt.errors import InputError

__all__ = ["spearman", "ssim"]


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"maps to compare must be two (H, W) arrays of one shape, got {a.shape} and {b.shape}")
    return a, b


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # Start of each run of equal values in sorted order; a run's rank is the mean of its positions.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], values.size]
    run_rank = (starts + ends + 1) / 2.0  # mean of (start+1 .. end)
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (H, W), ties ranked by their mean rank.

    NaN when either map is constant (its ranks have no spread, so no correlation is defined).
    """
    a, b = _check_pair(a, b)
    ra, rb = _ranks(a.ravel()), _ranks(b.ravel())
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _gaussian_blur(image: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """Separable Gaussian filter with mirror padding (edge sample repeated: d c b a | a b c d)."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    out = image
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="symmetric")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, weight in enumerate(kernel):
            acc += weight * (padded[i : i + n] if axis == 0 else padded[:, i : i + n])
        out = acc
    return out


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, sigma: float = 1.5, truncate: float = 3.5) -> float:
    """Mean structural similarity (Wang et al. 2004) of two maps (H, W) with values in [0, data_range].

    Local statistics use a Gaussian window (sigma 1.5, radius int(truncate * sigma + 0.5) = 5,
    i.e. 11 x 11) and population (co)variances; constants C1 = (0.01 L)^2, C2 = (0.03 L)^2. The
    mean leaves out a border as wide as the window's radius, where the window is mostly padding.
    """
    a, b = _check_pair(a, b)
    radius = int(truncate * sigma + 0.5)
    if min(a.shape) <= 2 * radius:
        raise InputError(f"SSIM needs maps larger than {2 * radius + 1} pixels a side, got {a.shape}")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a = _gaussian_blur(a, sigma, radius)
    mu_b = _gaussian_blur(b, sigma, radius)
    var_a = _gaussian_blur(a * a, sigma, radius) - mu_a * mu_a
    var_b = _gaussian_blur(b * b, sigma, radius) - mu_b * mu_b
    cov = _gaussian_blur(a * b, sigma, radius) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index[radius:-radius, radius:-radius].mean())


def finite_or_none(value: float) -> float | None:
    """A score as a JSON-ready float, None where it is undefined (NaN, e.g. Spearman of a constant map)."""
    return float(value) if np.isfinite(value) else None
