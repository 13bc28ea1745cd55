"""The model a sanity check runs on, and its derived bundles cached next to the original.

Derived bundles (the walled model, each randomisation step) live in the per-user cache
(``opticam_rt.cache.cache_dir()``) beside the built-in model's own bundle, one directory per
derived model, named ``<model>.<kind>-<digest>``. A ``sanity-key.json`` file written after the
export says what the directory holds; a directory whose key differs or whose files fail the
bundle's hash check is exported again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from opticam_rt.bundle import Bundle, load_bundle
from opticam_rt.errors import BundleError, ExportError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["SanityModel", "cached_export", "model_fingerprint"]

KEY_FILE = "sanity-key.json"


@dataclass(frozen=True)
class SanityModel:
    """A classifier with its export settings: ``tap`` a TapSpec string, ``input_size`` (H, W),
    ``mean``/``std`` on pixels in [0, 1]; ``spec`` is what ``--model`` was given."""

    name: str
    spec: str
    build: Callable[[], "nn.Module"]
    tap: str
    input_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] | None = None
    builtin: bool = False

    @classmethod
    def load(cls, spec: str, layer: str | None = None, input_size: tuple[int, int] | None = None,
             mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> "SanityModel":
        """A built-in name or ``pkg.module:factory`` (as ``export --model``); the settings a user
        factory lacks must be given, and given ones override a built-in's."""
        from opticam_rt.export import load_recipe

        recipe = load_recipe(spec)
        settings = {"--layer": layer or recipe.tap, "--input-size": input_size or recipe.input_size,
                    "--mean": mean or recipe.mean, "--std": std or recipe.std}
        missing = [option for option, value in settings.items() if value is None]
        if missing:
            raise ExportError(f"model {spec!r} is not built in: give {', '.join(missing)}")
        overridden = any(v is not None for v in (layer, input_size, mean, std))
        return cls(
            name=recipe.name, spec=spec, build=recipe.build, tap=settings["--layer"],
            input_size=tuple(settings["--input-size"]), mean=tuple(settings["--mean"]),
            std=tuple(settings["--std"]), class_names=recipe.class_names,
            builtin=recipe.tap is not None and not overridden,
        )

    def settings(self) -> dict[str, Any]:
        return {"tap": self.tap, "input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std)}


def model_fingerprint(model: "nn.Module") -> str:
    """sha256 of a model's state (names, dtypes, shapes and bytes of every parameter and buffer)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return digest.hexdigest()


def bundle_hashes(bundle: Bundle) -> dict[str, str]:
    """File name -> sha256 of every file the bundle's manifest lists."""
    return {name: info["sha256"] for name, info in sorted(bundle.manifest.files.items())}


def cached_export(
    model: "nn.Module",
    directory: Path,
    key: dict[str, Any],
    sm: SanityModel,
    tap: str,
    log: Callable[[str], None] | None = None,
) -> Bundle:
    """The bundle of ``model`` in ``directory``, exported there unless it already holds ``key``'s export.

    The export is not verified against PyTorch (as the built-in model's cached bundle): the
    checks compare maps between bundles written by the same exporter. It has no explainer
    graphs: the checks run each method's host loop over the core graphs, and building all eight
    explainer graphs was most of a walled export's ~147 s.
    """
    from opticam_rt.export import export_bundle

    say = log or (lambda m: None)
    stamp = directory / KEY_FILE
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == key:
                return load_bundle(directory)
        except (BundleError, json.JSONDecodeError) as exc:
            say(f"cached bundle {directory} unusable ({exc}); exporting again")
    say(f"exporting {directory.name} to {directory} (once; cached for later runs)")
    try:
        bundle, _ = export_bundle(
            model, directory, tap=tap, input_size=sm.input_size, mean=sm.mean, std=sm.std,
            class_names=sm.class_names, model_name=directory.name, model_spec=None,
            force=True, verify=False, explainers=False, log=say,
        )
    except ExportError as exc:
        raise ExportError(f"exporting {directory.name}: {exc}") from exc
    stamp.write_text(json.dumps(key, indent=2, sort_keys=True))
    return bundle


def derived_dir(cache: Path, sm: SanityModel, kind: str, key: dict[str, Any]) -> Path:
    """``<cache>/<model>.<kind>-<12 hex digits of the key>``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return cache / f"{sm.name}.{kind}-{digest}"
