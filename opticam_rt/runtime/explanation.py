"""The result of explaining a batch: maps, targets and the scores around them, whichever engine ran."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Explanation:
    """Saliency maps and the scores around them, for a batch of N images.

    maps (N, H, W) float32 in [0, 1] at model resolution; targets (N,) int; scores (N,) and
    masked_scores (N,) are the target's softmax probability on x and on x * map; options, the
    method's options as run (defaults filled in). For Opti-CAM, u (N, K) holds the final channel
    logits, trace (N, T) the loss per step (NaN after an image stopped early) and iterations (N,)
    the steps each image used.
    """

    method: str
    backend: str
    maps: np.ndarray
    targets: np.ndarray
    scores: np.ndarray
    masked_scores: np.ndarray
    class_names: list[str | None]
    seconds: float
    options: dict[str, Any] = field(default_factory=dict)
    engine: str = "host"
    trace: np.ndarray | None = None
    iterations: np.ndarray | None = None
    u: np.ndarray | None = None

    def record(self, i: int) -> dict[str, Any]:
        """Image i as a JSON-ready dict."""
        out: dict[str, Any] = {
            "method": self.method,
            "backend": self.backend,
            "engine": self.engine,
            "target": int(self.targets[i]),
            "class_name": self.class_names[i],
            "score": float(self.scores[i]),
            "masked_score": float(self.masked_scores[i]),
        }
        if self.iterations is not None:
            steps = int(self.iterations[i])
            # iterations: the budget asked for; steps: the steps this image took (fewer when
            # tol/patience stopped it early)
            out["iterations"] = int(self.options.get("iterations", steps))
            out["steps"] = steps
            out["final_loss"] = float(self.trace[i, steps - 1]) if self.trace is not None else None
        return out
