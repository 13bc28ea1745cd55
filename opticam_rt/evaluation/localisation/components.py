"""Connected components of a binarised map in NumPy (row runs joined by union-find), the predicted
box ``B_p`` (the box of the largest component) and its best IoU with the ground truth.

Conventions (boxes, binarisation, components): see :mod:`opticam_rt.evaluation.localisation`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.evaluation._checks import check_map
from opticam_rt.evaluation.localisation.boxes import Box, Threshold, box_iou, check_boxes


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True: (row, start, end-exclusive), in raster order."""
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)  # d[r, j] = padded[r, j+1] - padded[r, j]
    rows, starts = np.nonzero(d == 1)  # padded col j+1 (= mask col j) turns on
    _, ends = np.nonzero(d == -1)  # mask col j-1 was the last one on: end is j
    return rows, starts, ends


def _run_components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Runs of ``mask`` and the component (0..n-1, in raster order of first pixel) of each run."""
    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity}")
    rows, starts, ends = _runs(mask)
    n_runs = rows.size
    if n_runs == 0:
        return rows, starts, ends, np.zeros(0, np.int64), 0
    w2 = mask.shape[1] + 2
    k = 1 if connectivity == 8 else 0
    start_key = rows * w2 + starts
    end_key = rows * w2 + ends
    # For each run b in row r+1, the runs a in row r that touch it form a contiguous range:
    # a touches b iff s_a < e_b + k and s_b < e_a + k (k = 1 lets diagonals touch). Keys of
    # row r lie in [r*w2, r*w2 + w + 1), so searching with row r's offset stays in row r.
    prev = (rows - 1) * w2
    lo = np.searchsorted(end_key, prev + starts - k, side="right")
    hi = np.searchsorted(start_key, prev + ends + k, side="left")
    counts = np.maximum(hi - lo, 0)
    total = int(counts.sum())
    parent = np.arange(n_runs)
    if total:
        b_idx = np.repeat(np.arange(n_runs), counts)
        a_idx = np.repeat(lo, counts) + (np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts))
        par = parent.tolist()

        def find(i: int) -> int:
            while par[i] != i:
                par[i] = par[par[i]]  # path halving
                i = par[i]
            return i

        for a, b in zip(a_idx.tolist(), b_idx.tolist()):
            ra, rb = find(a), find(b)
            if ra != rb:
                # Keep the smaller index as root: roots are then the first run of their component.
                if ra < rb:
                    par[rb] = ra
                else:
                    par[ra] = rb
        parent = np.array([find(i) for i in range(n_runs)])
    # Roots are each component's first run in raster order; number them in that order.
    roots, comp = np.unique(parent, return_inverse=True)
    return rows, starts, ends, comp.reshape(-1), int(roots.size)


def connected_components(mask: np.ndarray, connectivity: int = 8) -> tuple[np.ndarray, int]:
    """Label the connected components of a boolean (H, W) mask.

    Returns ``(labels, n)``: labels (H, W) int32 with 0 for background and 1..n for the
    components, numbered in raster order of their first pixel; ``connectivity`` 8 (default)
    or 4.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise InputError(f"connected_components takes an (H, W) mask, got shape {m.shape}")
    rows, starts, ends, comp, n = _run_components(m, connectivity)
    labels = np.zeros(m.shape, dtype=np.int32)
    lengths = ends - starts
    if lengths.size:
        r = np.repeat(rows, lengths)
        c = np.repeat(starts, lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
        labels[r, c] = np.repeat(comp + 1, lengths)
    return labels, n


def largest_component_box(mask: np.ndarray, connectivity: int) -> Box | None:
    """Bounding box of the largest component (ties: first in raster order); None if empty."""
    rows, starts, ends, comp, n = _run_components(mask, connectivity)
    if n == 0:
        return None
    area = np.bincount(comp, weights=ends - starts, minlength=n)
    best = int(np.argmax(area))  # argmax returns the first maximum: raster-order tie-break
    sel = comp == best
    return (int(starts[sel].min()), int(rows[sel].min()), int(ends[sel].max()), int(rows[sel].max()) + 1)


def threshold_value(s: np.ndarray, threshold: Threshold) -> float:
    if isinstance(threshold, str):
        if threshold != "mean":
            raise InputError(f"threshold must be a fraction of the max or 'mean', got {threshold!r}")
        return float(s.mean())
    t = float(threshold)
    if not (0.0 <= t <= 1.0):
        raise InputError(f"threshold must be a fraction of the map's max in [0, 1], got {threshold}")
    return t * float(s.max())


def predicted_box(saliency: np.ndarray, threshold: Threshold = "mean", *, connectivity: int = 8) -> Box | None:
    """Bounding box of the largest connected component of ``{p : S_p > t}``; None if empty.

    ``saliency``: (H, W). ``threshold``: ``"mean"`` (the map's average value, as the Opti-CAM
    paper's ``B_p``, Appendix B.1) or a fraction of the map's max. Returns
    ``(x0, y0, x1, y1)`` inclusive-exclusive.
    """
    s = check_map(saliency)
    return largest_component_box(s > threshold_value(s, threshold), connectivity)


def max_iou(saliency: np.ndarray, boxes: Sequence[Sequence[float]], threshold: Threshold = "mean",
            *, connectivity: int = 8) -> float:
    """``max_B IoU(B, B_p)`` over the ground-truth boxes, ``B_p`` = :func:`predicted_box`; 0 if no ``B_p``."""
    s = check_map(saliency)
    gt = check_boxes(boxes, *s.shape)
    bp = predicted_box(s, threshold, connectivity=connectivity)
    if bp is None:
        return 0.0
    return max(box_iou(b, bp) for b in gt)
