"""A PyTorch classifier with its preprocessing and a hook on the tap layer, for the reference methods."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import torch
from torch import nn


#: Set to 1 (or true/yes) to let the PyTorch backend import the model code a bundle's manifest
#: names; the ``trust_code=True`` argument does the same for one Explainer or runner.
TRUST_ENV = "OPTICAM_RT_TRUST_BUNDLE_CODE"


def trusts_bundle_code() -> bool:
    """Whether the environment opts in to importing the code named by bundle manifests."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def model_spec_for(manifest: "Manifest", model: str | None = None, trust_code: bool = False,  # noqa: F821
                   where: object = "the bundle") -> str:
    """The model recipe to build for ``manifest``: ``model`` when the caller names one; else the
    manifest's own ``model_spec`` (or ``model_name``) when it is a built-in name, or when the
    caller trusts the bundle's code (``trust_code`` or OPTICAM_RT_TRUST_BUNDLE_CODE=1).

    A bundle is data: whoever wrote the manifest chose that spec, and the hashes only prove the
    files match the manifest. Importing ``payload.py:make`` or ``some.module:f`` runs its code, so
    that needs the user's word; UntrustedCodeError otherwise.
    """
    from opticam_rt.errors import UntrustedCodeError
    from opticam_rt.export.models import BUILTIN_MODELS

    if model is not None:
        return model
    spec = manifest.model_spec or manifest.model_name
    if spec in BUILTIN_MODELS or trust_code or trusts_bundle_code():
        return spec
    shown = " ".join(str(spec).split())[:200]
    raise UntrustedCodeError(
        f"{where}: the manifest names model code {shown!r}, which is not imported (a bundle is data; "
        f"importing it would run its code): name the model yourself (--model / model=...) or trust "
        f"this bundle's code ({TRUST_ENV}=1 / trust_code=True)"
    )


def _pair(batch: torch.Tensor) -> torch.Tensor:
    """A batch of one repeated to two. PyTorch 2.13's CPU BatchNorm2d backward (eval mode)
    returns a wrong input gradient at batch 1 when the incoming gradient has channels-last
    strides (a conv + BatchNorm stem flattened to tokens, as in LeViT); at batch 2 it is right,
    and rows are independent in eval mode, so the first row's outputs and gradients are the
    batch of one's (docs/decisions.md)."""
    return batch.repeat(2, *([1] * (batch.dim() - 1)))


class TorchClassifier:
    """Pixels (N, 3, H, W) in [0, 1] -> logits (N, C), with the tap output (N, K, h, w) captured.

    Written apart from ``opticam_rt.export`` on purpose: parity tests compare the ONNX path
    against this code, so it must not share the exporter's tracing or tap machinery.

    Args:
        tap: module path with an optional ``@i`` call index (``_swish@1``).
        tokens: for a transformer tap whose output is tokens (N, T, D), the manifest's
            ``tap_tokens`` ({"prefix", "height", "width"}): the first ``prefix`` tokens are
            dropped and the rest, in row-major patch order, laid out as (N, D, height, width).
            A replacement map goes back in after the tap's own prefix tokens.
        channels_last: the tap's 4-D output is (N, h, w, D) (the manifest's ``tap_layout``):
            the map is its (N, D, h, w) transpose, and a replacement goes back transposed.
    """

    def __init__(
        self,
        model: nn.Module,
        tap: str,
        mean: Sequence[float],
        std: Sequence[float],
        tokens: Mapping[str, int] | None = None,
        channels_last: bool = False,
    ) -> None:
        self.model = model.eval()
        self.channels_last = channels_last
        for p in self.model.parameters():
            p.requires_grad_(False)
        path, _, index = tap.partition("@")
        self.tap_module = dict(self.model.named_modules())[path]
        self.tap_call = int(index) if index else 0
        self.tokens = None if tokens is None else (int(tokens["prefix"]), int(tokens["height"]), int(tokens["width"]))
        self.mean = torch.tensor(list(mean), dtype=torch.float32).reshape(1, -1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).reshape(1, -1, 1, 1)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[0] == 1:  # see _pair
            return self.model(_pair((image - self.mean) / self.std))[:1]
        return self.model((image - self.mean) / self.std)

    def logits_and_features(self, image: torch.Tensor, replace: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model; return logits and the tap output (or continue from ``replace`` instead)."""
        seen: list[torch.Tensor] = []
        calls = [0]

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            calls[0] += 1
            if calls[0] - 1 != self.tap_call:
                return None
            # Clones: an in-place op right after the tap (DenseNet's F.relu(..., inplace=True))
            # would otherwise rewrite the captured map, or write into the replacement leaf.
            if replace is None:
                if self.channels_last:
                    seen.append(torch.movedim(output, 3, 1).clone())
                else:
                    seen.append(self._to_map(output) if self.tokens else output.clone())
                return None
            seen.append(replace)
            return self._put_back(output, replace)

        single = image.shape[0] == 1  # run as a batch of two: see _pair
        if single and replace is not None:
            replace = _pair(replace)
        handle = self.tap_module.register_forward_hook(hook)
        try:
            logits = self.logits(image)
        finally:
            handle.remove()
        return logits, seen[0][:1] if single else seen[0]

    def logits_from_tap(self, image: torch.Tensor, replace: torch.Tensor) -> torch.Tensor:
        """Logits (M, C) of one image (1, 3, H, W) continued from each of M tap maps
        ``replace`` (M, K, h, w), without gradients: what ``logits_and_features(image.expand(M,
        ...), replace=replace)`` gives, with the layers before the tap run once instead of M
        times (Ablation-CAM's K passes then cost K head passes, not K whole networks).

        The batch grows from 1 to M at the tap, so a tensor from before the tap that a later
        layer uses (a residual across the tap, ViT's prefix tokens) takes part by broadcasting,
        which is the expansion's value. A model that does not broadcast there (``torch.cat`` of
        an earlier tensor, a batch size read before the tap) raises or returns the wrong batch;
        then the M passes run in full, so the result is the same either way."""
        if image.shape[0] != 1:
            raise ValueError(f"logits_from_tap takes one image, got a batch of {image.shape[0]}")
        m = replace.shape[0]

        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            calls[0] += 1
            return None if calls[0] - 1 != self.tap_call else self._put_back(output, replace)

        calls = [0]
        with torch.no_grad():
            handle = self.tap_module.register_forward_hook(hook)
            try:
                logits = self.model((image - self.mean) / self.std)
            except RuntimeError:
                logits = None
            finally:
                handle.remove()
            if logits is not None and logits.shape[0] == m:
                return logits
            return self.logits_and_features(image.expand(m, -1, -1, -1), replace=replace)[0]

    def _put_back(self, output: torch.Tensor, replace: torch.Tensor) -> torch.Tensor:
        """What the tap returns instead of ``output`` to continue from the maps ``replace``
        (M, K, h, w): transposed back for a channels-last tap; for a token tap, the tap's own
        prefix tokens (broadcast to M rows) followed by the maps as row-major patch tokens.
        Clones: an in-place op right after the tap must not write into ``replace``."""
        if self.channels_last:
            return torch.movedim(replace, 1, 3).clone()
        if self.tokens:
            patches = torch.flatten(replace, 2).transpose(1, 2)  # (M, h*w, D), row-major patches
            return torch.cat([output[:, : self.tokens[0]].expand(len(replace), -1, -1), patches], dim=1)
        return replace.clone()

    def _to_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, T, D) tokens -> (N, D, height, width) patch map."""
        prefix, height, width = self.tokens  # type: ignore[misc]
        if tokens.dim() != 3 or tokens.shape[1] != prefix + height * width:
            raise ValueError(
                f"tap output {tuple(tokens.shape)} is not {prefix} prefix tokens plus a {height} x {width} patch grid"
            )
        patches = tokens[:, prefix:]
        return torch.stack([patches[:, r * width : (r + 1) * width].transpose(1, 2) for r in range(height)], dim=2)

    @classmethod
    def from_manifest(
        cls, manifest: "Manifest", model: str | None = None, trust_code: bool = False,  # noqa: F821
        where: object = "the bundle",
    ) -> "TorchClassifier":
        """Rebuild the PyTorch model a bundle was exported from: ``model`` when given (a built-in
        name, ``pkg.module:factory`` or ``file.py:factory``), else the manifest's recipe under the
        trust rule of ``model_spec_for``."""
        from opticam_rt.export.models import load_recipe

        recipe = load_recipe(model_spec_for(manifest, model, trust_code, where))
        return cls(recipe.build(), manifest.tap_layer, manifest.mean, manifest.std, manifest.tap_tokens,
                   channels_last=manifest.tap_layout == "channels-last")
