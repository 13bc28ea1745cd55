"""The bounding-box study (the Opti-CAM paper, arXiv 2301.07002, Figure 4).

How much of a classifier's evidence lies inside the ground-truth box B? The study scores, with
the classification metrics AD / AG / AI (:mod:`opticam_rt.evaluation.classification`), these
maps used as saliency S in the masked image ``x * S``:

* ``B``: the box itself (1 inside the union of the image's boxes, 0 outside);
* ``I\\B``: its complement (0 inside, 1 outside);
* for every method, its map ``S``, ``B&S`` (the map kept inside the boxes, zero outside:
  the paper's B ∩ S) and ``S\\B`` (the map kept outside the boxes).

A record of ``evaluate --box-study`` carries ``box_study``: the target probabilities ``o`` of
the four masked images; :func:`box_study_summary` turns records into the study's rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from opticam_rt.errors import InputError
from opticam_rt.evaluation.classification import classification_metrics, target_probabilities
from opticam_rt.evaluation.localisation.boxes import boxes_mask

#: Keys of a record's ``box_study``: the two method-independent rows, then the two per method.
BOX_ROWS = ("B", "I\\B")
METHOD_ROWS = ("B&S", "S\\B")
COLUMNS = ("AD", "AG", "AI")


def box_study_scores(
    images: np.ndarray,
    maps: np.ndarray,
    boxes: Sequence[Sequence[Sequence[float]]],
    targets: np.ndarray,
    predict_proba: Any,
    batch_size: int = 32,
) -> dict[str, np.ndarray]:
    """``{"B", "I\\B", "B&S", "S\\B"}`` -> (N,) target probabilities of the masked images.

    ``images`` (N, 3, H, W) in [0, 1]; ``maps`` (N, H, W); ``boxes[i]`` the boxes of image i at
    model resolution (x0, y0, x1, y1, exclusive end); every image needs at least one.
    """
    n, _, h, w = images.shape
    if len(boxes) != n:
        raise InputError(f"the box study needs boxes for each of the {n} images, got {len(boxes)} lists")
    inside = np.stack([boxes_mask(b, h, w) for b in boxes]).astype(np.float32)
    masks = {"B": inside, "I\\B": 1 - inside, "B&S": maps * inside, "S\\B": maps * (1 - inside)}
    return {k: target_probabilities(images, targets, predict_proba, saliency=m.astype(np.float32), batch_size=batch_size)
            for k, m in masks.items()}


def box_study_summary(records: Iterable[Mapping[str, Any]], methods: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """The study's rows from ``evaluate --box-study`` records: ``B`` and ``I\\B`` (over every
    image recorded, once each), then for each method ``<method>``, ``<method> B&S`` and
    ``<method> S\\B``; columns AD, AG, AI (percent) and n_images. Records without
    ``box_study`` are skipped; the last record of a (method, image) wins."""
    per: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in records:
        if isinstance(r.get("box_study"), Mapping):
            per.setdefault(str(r["method"]), {})[str(r["image"])] = r
    order = list(methods) if methods is not None else list(per)
    rows: dict[str, dict[str, float]] = {}
    by_image: dict[str, Mapping[str, Any]] = {}
    for m in order:
        by_image.update(per.get(m, {}))

    def row(p: list[float], o: list[float]) -> dict[str, float]:
        return {"n_images": float(len(p)), **classification_metrics(np.array(p), np.array(o))}

    if by_image:
        for key in BOX_ROWS:
            rows[key] = row([r["p"] for r in by_image.values()], [r["box_study"][key] for r in by_image.values()])
    for m in order:
        recs = list(per.get(m, {}).values())
        if not recs:
            continue
        p = [r["p"] for r in recs]
        rows[m] = row(p, [r["o"] for r in recs])
        for key in METHOD_ROWS:
            rows[f"{m} {key}"] = row(p, [r["box_study"][key] for r in recs])
    return rows
