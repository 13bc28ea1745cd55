"""Localisation metrics of a saliency map against ground-truth boxes (pointing games, BoxAcc, F1, OM/LE, SM).

Conventions. A box is ``(x0, y0, x1, y1)`` in model-resolution pixels, inclusive-exclusive:
it covers columns ``x0 .. x1-1`` and rows ``y0 .. y1-1``. An image may have several
ground-truth boxes; ``U`` below is the union of their pixels. Saliency maps are (H, W) at
the model resolution. Boxes are clipped to the image; a box that is empty after clipping
is an InputError.

The Opti-CAM paper (Zhang et al., arXiv 2301.07002 / CVIU 2024, Appendix B, eqs. (B.1)-(B.7),
Table A.7) reports OM, LE, F1, BoxAcc, SP, EP and SM. Its predicted box ``B_p`` is the
bounding box of the largest connected component of the map binarised at the map's
**average value**; this is ``predicted_box(s, threshold="mean")``. Where the paper's table
uses a variant that differs from the usual definition, the function's docstring says so
and a parameter selects it; :func:`localisation_metrics` with ``protocol="opticam"``
computes the paper's variants in one call.

Binarisation: a pixel is foreground when ``S > t`` (strict, as in the paper's eq. (B.5)
``{p : S_p > eta}`` and in Choe et al.'s ``cv2.threshold(..., THRESH_BINARY)``), where ``t``
is the map's mean (``threshold="mean"``) or ``threshold * max(S)`` for a float threshold
(for maps min-max normalised to [0, 1] this equals the absolute threshold of Choe et al.).
A map with no foreground pixel (e.g. a constant map) has no predicted box: IoU 0.
Connected components use 8-connectivity by default (4 on request), computed in NumPy
(row runs joined by union-find), so no SciPy or OpenCV is needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, Union

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.evaluation._checks import (
    PredictProba,
    Progress,
    batched_scores,
    check_images,
    check_map,
    check_maps,
    check_positive_int,
    check_targets,
)

__all__ = [
    "Box",
    "DEFAULT_BOX_IOU_THRESHOLDS",
    "DEFAULT_BOX_THRESHOLDS",
    "box_accuracy",
    "box_accuracy_grid",
    "box_iou",
    "boxes_mask",
    "connected_components",
    "energy_pointing_game",
    "localisation_error",
    "localisation_metrics",
    "max_box_accuracy",
    "max_iou",
    "official_metric",
    "pixel_f1",
    "pointing_game",
    "predicted_box",
    "resize_bilinear",
    "saliency_metric",
]

Box = tuple[int, int, int, int]
Threshold = Union[float, Literal["mean"]]

#: Saliency thresholds eta (fractions of the map's max) of Choe et al. 2020's MaxBoxAcc:
#: 0.00, 0.01, ..., 0.99.
DEFAULT_BOX_THRESHOLDS: tuple[float, ...] = tuple(round(i * 0.01, 2) for i in range(100))
#: IoU thresholds delta averaged over by Choe et al. 2020's MaxBoxAccV2 and by Opti-CAM (B.5).
DEFAULT_BOX_IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)


# --------------------------------------------------------------------------- boxes


def _check_boxes(boxes: Sequence[Sequence[float]], height: int, width: int) -> list[Box]:
    """Clip boxes to the image and return them as int tuples; InputError if none or any is empty."""
    if boxes is None or len(boxes) == 0:
        raise InputError("localisation metrics need at least one ground-truth box for the image")
    out: list[Box] = []
    for b in boxes:
        if len(b) != 4:
            raise InputError(f"a box is (x0, y0, x1, y1), got {tuple(b)!r}")
        try:
            x0, y0, x1, y1 = (int(round(float(v))) for v in b)
        except (TypeError, ValueError) as exc:
            raise InputError(f"box coordinates must be numbers, got {tuple(b)!r}") from exc
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x1, width), min(y1, height)
        if cx1 <= cx0 or cy1 <= cy0:
            raise InputError(f"box {(x0, y0, x1, y1)} is empty or outside the {width} x {height} image "
                             "(boxes are x0, y0, x1, y1, inclusive-exclusive, at model resolution)")
        out.append((cx0, cy0, cx1, cy1))
    return out


def boxes_mask(boxes: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Union ``U`` of the boxes' pixels; (height, width) bool."""
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in _check_boxes(boxes, height, width):
        mask[y0:y1, x0:x1] = True
    return mask


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two inclusive-exclusive boxes (areas in pixels); 0 if disjoint."""
    ax0, ay0, ax1, ay1 = a
    bx0, by0, bx1, by1 = b
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return float(inter / union) if union > 0 else 0.0


# ------------------------------------------------------------- connected components


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


def _largest_component_box(mask: np.ndarray, connectivity: int) -> Box | None:
    """Bounding box of the largest component (ties: first in raster order); None if empty."""
    rows, starts, ends, comp, n = _run_components(mask, connectivity)
    if n == 0:
        return None
    area = np.bincount(comp, weights=ends - starts, minlength=n)
    best = int(np.argmax(area))  # argmax returns the first maximum: raster-order tie-break
    sel = comp == best
    return (int(starts[sel].min()), int(rows[sel].min()), int(ends[sel].max()), int(rows[sel].max()) + 1)


def _threshold_value(s: np.ndarray, threshold: Threshold) -> float:
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
    return _largest_component_box(s > _threshold_value(s, threshold), connectivity)


def max_iou(saliency: np.ndarray, boxes: Sequence[Sequence[float]], threshold: Threshold = "mean",
            *, connectivity: int = 8) -> float:
    """``max_B IoU(B, B_p)`` over the ground-truth boxes, ``B_p`` = :func:`predicted_box`; 0 if no ``B_p``."""
    s = check_map(saliency)
    gt = _check_boxes(boxes, *s.shape)
    bp = predicted_box(s, threshold, connectivity=connectivity)
    if bp is None:
        return 0.0
    return max(box_iou(b, bp) for b in gt)


# ------------------------------------------------------------------ pointing games


def pointing_game(saliency: np.ndarray, boxes: Sequence[Sequence[float]], tolerance: float = 15) -> bool:
    """Pointing game hit: the max-saliency pixel lies within ``tolerance`` px of a box.

    Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016 (extended in
    IJCV 2018), the "pointing game" experiment: a hit is counted when the maximum point lies
    on an annotated instance of the class, with a 15-pixel tolerance. As in TorchRay's implementation of that
    benchmark, "within" is ``(du^2 + dv^2) < tolerance^2`` (strict) between the max pixel and
    the nearest pixel of any box; ties for the max are broken in raster order (first pixel).

    The Opti-CAM paper's "standard pointing game" SP (eq. (B.6), ``1[p* in U]``) uses **no
    tolerance**: pass ``tolerance=0``, which counts a hit only when the pixel is inside a box.
    """
    s = check_map(saliency)
    if tolerance < 0:
        raise InputError(f"tolerance must be >= 0 pixels, got {tolerance}")
    gt = _check_boxes(boxes, *s.shape)
    py, px = np.unravel_index(int(np.argmax(s)), s.shape)
    for x0, y0, x1, y1 in gt:
        # Distance along each axis to the nearest pixel of the box (0 when within its span).
        dx = max(x0 - px, 0, px - (x1 - 1))
        dy = max(y0 - py, 0, py - (y1 - 1))
        if (dx == 0 and dy == 0) or dx * dx + dy * dy < tolerance * tolerance:
            return True
    return False


def energy_pointing_game(saliency: np.ndarray, boxes: Sequence[Sequence[float]]) -> float:
    """Energy-based pointing game: the fraction of saliency energy inside the boxes, in [0, 1].

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR Workshops 2020, the energy-based pointing game of its localization
    evaluation:
    ``sum_{p in U} S_p / sum_p S_p``. Equal to the Opti-CAM paper's EP, which it defines as
    the precision (B.3). Negative values are clipped to 0 first; an all-zero map gives 0.
    """
    s = np.maximum(check_map(saliency), 0.0)
    u = boxes_mask(boxes, *s.shape)
    total = s.sum()
    return float(s[u].sum() / total) if total > 0 else 0.0


# --------------------------------------------------------------------- box accuracy


def box_accuracy(saliency: np.ndarray, boxes: Sequence[Sequence[float]], threshold: Threshold = 0.5,
                 iou_threshold: float = 0.5, *, connectivity: int = 8) -> bool:
    """Box accuracy hit: ``max_B IoU(B, B_p^eta) >= delta``.

    Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR 2020,
    the BoxAcc / MaxBoxAcc metric: ``B_p^eta`` is the bounding box of the largest connected component of
    ``{p : S_p > eta}`` (here ``eta = threshold * max(S)``), compared with any ground-truth box
    at IoU threshold ``delta = iou_threshold``. The Opti-CAM paper's BA (eq. (B.5)) takes the
    best ``eta`` after averaging over images, then the mean over ``delta`` in {0.3, 0.5, 0.7}:
    see :func:`box_accuracy_grid` and :func:`max_box_accuracy`.
    """
    return max_iou(saliency, boxes, threshold, connectivity=connectivity) >= iou_threshold


def box_accuracy_grid(
    saliency: np.ndarray,
    boxes: Sequence[Sequence[float]],
    thresholds: Sequence[float] = DEFAULT_BOX_THRESHOLDS,
    iou_thresholds: Sequence[float] = DEFAULT_BOX_IOU_THRESHOLDS,
    *,
    connectivity: int = 8,
) -> np.ndarray:
    """Per-image BoxAcc hits for every (eta, delta); (len(thresholds), len(iou_thresholds)) bool."""
    s = check_map(saliency)
    gt = _check_boxes(boxes, *s.shape)
    deltas = np.asarray(iou_thresholds, dtype=np.float64)
    grid = np.zeros((len(thresholds), deltas.size), dtype=bool)
    for i, eta in enumerate(thresholds):
        bp = _largest_component_box(s > _threshold_value(s, float(eta)), connectivity)
        best = 0.0 if bp is None else max(box_iou(b, bp) for b in gt)
        grid[i] = best >= deltas
    return grid


def max_box_accuracy(grids: np.ndarray) -> float:
    """MaxBoxAcc(%) from per-image grids (N, T, D): max over eta of the mean hit rate, mean over delta.

    Choe et al. 2020 (MaxBoxAccV2 with delta in {0.3, 0.5, 0.7}) and Opti-CAM eq. (B.5):
    "after averaging over the test images, we take the maximum of this measure over a set of
    values eta and then the average over a set of values delta".
    """
    g = np.asarray(grids, dtype=np.float64)
    if g.ndim != 3 or g.shape[0] == 0:
        raise InputError(f"max_box_accuracy takes per-image grids of shape (N, T, D), got {g.shape}")
    return float(g.mean(axis=0).max(axis=0).mean() * 100.0)


# --------------------------------------------------------------------------- F1


def pixel_f1(saliency: np.ndarray, boxes: Sequence[Sequence[float]], threshold: float | None = 0.5) -> float:
    """Pixel-wise F1 = 2PR / (P + R) of the map against the box union ``U``, in [0, 1].

    With a float ``threshold`` (default 0.5), the map is binarised as ``M = {S > threshold *
    max(S)}`` and ``P = |M & U| / |M|``, ``R = |M & U| / |U|`` (standard pixel-wise F1, e.g.
    as in WSOL segmentation evaluation). With ``threshold=None`` the Opti-CAM paper's soft
    variant (eqs. (B.3), (B.4), used in its Table A.7) is computed on the map itself, values
    clipped to [0, 1]: ``P = sum_{p in U} S_p / sum_p S_p``, ``R = sum_{p in U} S_p / |U|``.
    F1 is 0 when P + R is 0.
    """
    s = check_map(saliency)
    u = boxes_mask(boxes, *s.shape)
    if threshold is None:
        m = np.clip(s, 0.0, 1.0)
    else:
        m = (s > _threshold_value(s, threshold)).astype(np.float64)
    inside = m[u].sum()
    total = m.sum()
    p = inside / total if total > 0 else 0.0
    r = inside / u.sum()
    return float(2 * p * r / (p + r)) if p + r > 0 else 0.0


# --------------------------------------------------------------------- OM and LE


def _ious_and_flags(max_ious: np.ndarray, correct_class: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    iou = np.asarray(max_ious, dtype=np.float64)
    if iou.ndim != 1 or np.any(~np.isfinite(iou)) or np.any(iou < 0) or np.any(iou > 1):
        raise InputError(f"max_ious must be a 1-D array of IoUs in [0, 1], got shape {iou.shape}")
    if correct_class is None:
        return iou, None
    ok = np.asarray(correct_class)
    if ok.shape != iou.shape or ok.dtype != bool:
        raise InputError(f"correct_class must be a boolean array of shape {iou.shape}, "
                         f"got {ok.dtype} {ok.shape}")
    return iou, ok


def localisation_error(max_ious: np.ndarray, iou_threshold: float | None = 0.5) -> np.ndarray:
    """Per-image localisation error LE in [0, 1], ignoring the class; (N,) float64.

    ``max_ious``: (N,) best IoU of the predicted box with the ground-truth boxes
    (:func:`max_iou`). ILSVRC localisation (Russakovsky et al., "ImageNet Large Scale Visual
    Recognition Challenge", IJCV 2015; here with the class taken as given, as in the GT-known
    localisation of WSOL papers): error 1 when IoU < ``iou_threshold`` (0.5).
    With ``iou_threshold=None``, the Opti-CAM paper's continuous variant (eq. (B.2), Table A.7):
    ``1 - max_B IoU(B, B_p)``. The metric is the mean (times 100 for %).
    """
    iou, _ = _ious_and_flags(max_ious)
    if iou_threshold is None:
        return 1.0 - iou
    return (iou < iou_threshold).astype(np.float64)


def official_metric(max_ious: np.ndarray, correct_class: np.ndarray, iou_threshold: float | None = 0.5) -> np.ndarray:
    """Per-image ILSVRC official localisation error OM in [0, 1]; (N,) float64.

    ILSVRC top-1 localisation error (Russakovsky et al., "ImageNet Large Scale Visual
    Recognition Challenge", IJCV 2015; the WSOL "Top-1 Loc" error): an image
    counts as an error when its predicted class is wrong (``correct_class[i]`` False) **or**
    the predicted box overlaps no ground-truth box with IoU >= ``iou_threshold`` (0.5). With
    ``iou_threshold=None``, the Opti-CAM paper's continuous variant (eq. (B.1), Table A.7):
    ``1 - max_B IoU(B, B_p) * 1[c_p = c]``. The metric is the mean (times 100 for %).
    """
    iou, ok = _ious_and_flags(max_ious, correct_class)
    assert ok is not None
    if iou_threshold is None:
        return 1.0 - iou * ok
    return (~(ok & (iou >= iou_threshold))).astype(np.float64)


# ------------------------------------------------------------------ saliency metric


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of (C, h, w) to (C, height, width), float32.

    Half-pixel centres with edge clamping, i.e. PyTorch's ``interpolate(mode="bilinear",
    align_corners=False)`` without antialiasing.
    """
    x = np.asarray(image, dtype=np.float32)
    if x.ndim != 3 or x.shape[1] == 0 or x.shape[2] == 0:
        raise InputError(f"resize_bilinear takes a non-empty (C, h, w) image, got {x.shape}")
    _, h, w = x.shape

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        src = np.clip(src, 0.0, n_in - 1)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0).astype(np.float32)

    y0, y1, wy = axis(h, height)
    x0, x1, wx = axis(w, width)
    rows = x[:, y0, :] * (1 - wy)[None, :, None] + x[:, y1, :] * wy[None, :, None]
    return rows[:, :, x0] * (1 - wx)[None, None, :] + rows[:, :, x1] * wx[None, None, :]


def saliency_metric(
    images: np.ndarray,
    saliency: np.ndarray,
    targets: np.ndarray,
    predict_proba: PredictProba,
    *,
    threshold: Threshold = "mean",
    area_floor: float = 0.05,
    connectivity: int = 8,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> np.ndarray:
    """Saliency metric SM per image (lower is better); (N,) float64.

    Dabkowski & Gal, "Real Time Image Saliency for Black Box Classifiers", NeurIPS 2017, the
    "saliency metric" of its experiments: ``SM = log(max(a, 0.05)) - log(p)``, where ``a`` is the
    area of the tightest rectangular crop around the salient region as a fraction of the
    image, and ``p`` the probability of the class on that crop resized to the model input.
    As in the Opti-CAM paper (eq. (B.7), Table A.7) the crop is ``B_p``, the box of the largest
    connected component of the map thresholded at ``threshold`` (default: the map's mean).
    The crop is resized with :func:`resize_bilinear`. A map with no foreground pixel crops
    the whole image (a = 1); ``p`` is floored at 1e-12 so that ``log`` stays finite.

    ``images``: (N, 3, H, W) in [0, 1]; ``saliency``: (N, H, W); ``targets``: (N,) classes
    (the ground-truth class in the paper).
    """
    x = check_images(images)
    n, _, h, w = x.shape
    s = check_maps(saliency, (n, h, w))
    t = check_targets(targets, n)
    bs = check_positive_int(batch_size, "batch_size")
    if not (0.0 < area_floor <= 1.0):
        raise InputError(f"area_floor must be in (0, 1], got {area_floor}")
    boxes = [predicted_box(s[i], threshold, connectivity=connectivity) or (0, 0, w, h) for i in range(n)]
    areas = np.array([(x1 - x0) * (y1 - y0) / (h * w) for x0, y0, x1, y1 in boxes])

    def items() -> Iterator[tuple[np.ndarray, int]]:
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            yield resize_bilinear(x[i][:, y0:y1, x0:x1], h, w), int(t[i])

    p = np.concatenate(list(batched_scores(items(), n, predict_proba, bs, progress)))
    return np.log(np.maximum(areas, area_floor)) - np.log(np.maximum(p, 1e-12))


# ------------------------------------------------------------------ all at once


def localisation_metrics(
    saliency: np.ndarray,
    boxes: Sequence[Sequence[float]],
    *,
    correct_class: bool | None = None,
    protocol: Literal["standard", "opticam"] = "standard",
    box_thresholds: Sequence[float] | None = None,
    box_iou_thresholds: Sequence[float] = DEFAULT_BOX_IOU_THRESHOLDS,
    connectivity: int = 8,
) -> dict[str, object]:
    """Per-image localisation metrics of one (H, W) map, in percent, ready to store as a record.

    Keys: ``SP`` (pointing game hit, 0 or 100), ``EP`` (energy pointing game), ``F1``,
    ``BoxAcc`` (hit at eta = 0.5 of max, IoU >= 0.5), ``LE``, and ``OM`` when
    ``correct_class`` is given; the mean over images of each value is the metric. With
    ``box_thresholds`` given, ``box_acc_grid`` (a T x D list of 0/1, see
    :func:`box_accuracy_grid`) is added, from which :mod:`opticam_rt.evaluation.report`
    derives MaxBoxAcc. SM needs the classifier: see :func:`saliency_metric`.

    ``protocol="standard"``: pointing game with 15 px tolerance, thresholded F1 at 0.5 of max,
    ILSVRC OM/LE (IoU >= 0.5), predicted box at the map's mean. ``protocol="opticam"``: the
    variants of the Opti-CAM paper's Table A.7: SP without tolerance (B.6), soft F1
    (B.3, B.4), continuous OM/LE (B.1, B.2), predicted box at the map's mean.
    """
    if protocol not in ("standard", "opticam"):
        raise InputError(f"protocol must be 'standard' or 'opticam', got {protocol!r}")
    s = check_map(saliency)
    gt = _check_boxes(boxes, *s.shape)
    opticam = protocol == "opticam"
    iou = max_iou(s, gt, "mean", connectivity=connectivity)
    iou_thr = None if opticam else 0.5
    out: dict[str, object] = {
        "SP": 100.0 * pointing_game(s, gt, tolerance=0 if opticam else 15),
        "EP": 100.0 * energy_pointing_game(s, gt),
        "F1": 100.0 * pixel_f1(s, gt, threshold=None if opticam else 0.5),
        "BoxAcc": 100.0 * box_accuracy(s, gt, 0.5, 0.5, connectivity=connectivity),
        "LE": 100.0 * float(localisation_error(np.array([iou]), iou_thr)[0]),
        "max_iou": iou,
    }
    if correct_class is not None:
        out["OM"] = 100.0 * float(official_metric(np.array([iou]), np.array([bool(correct_class)]), iou_thr)[0])
    if box_thresholds is not None:
        grid = box_accuracy_grid(s, gt, box_thresholds, box_iou_thresholds, connectivity=connectivity)
        out["box_acc_grid"] = grid.astype(int).tolist()
    return out
