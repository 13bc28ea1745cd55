"""A PyTorch classifier with its preprocessing and a hook on the tap layer, for the reference methods."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class TorchClassifier:
    """Pixels (N, 3, H, W) in [0, 1] -> logits (N, C), with the tap output (N, K, h, w) captured.

    Written apart from ``opticam_rt.export`` on purpose: parity tests compare the ONNX path
    against this code, so it must not share the exporter's tracing or tap machinery.

    Args:
        tap: module path with an optional ``@i`` call index (``_swish@1``).
    """

    def __init__(self, model: nn.Module, tap: str, mean: Sequence[float], std: Sequence[float]) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        path, _, index = tap.partition("@")
        self.tap_module = dict(self.model.named_modules())[path]
        self.tap_call = int(index) if index else 0
        self.mean = torch.tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.model((image - self.mean) / self.std)

    def logits_and_features(self, image: torch.Tensor, replace: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model; return logits and the tap output (or continue from ``replace`` instead)."""
        seen: list[torch.Tensor] = []
        calls = [0]

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            calls[0] += 1
            if calls[0] - 1 != self.tap_call:
                return None
            seen.append(output if replace is None else replace)
            return replace

        handle = self.tap_module.register_forward_hook(hook)
        try:
            logits = self.logits(image)
        finally:
            handle.remove()
        return logits, seen[0]

    @classmethod
    def from_manifest(cls, manifest: "opticam_rt.bundle.Manifest") -> "TorchClassifier":  # noqa: F821
        """Rebuild the PyTorch model a bundle was exported from (its recipe must be importable)."""
        from opticam_rt.export.models import load_recipe

        recipe = load_recipe(manifest.model_spec or manifest.model_name)
        return cls(recipe.build(), manifest.tap_layer, manifest.mean, manifest.std)
