"""The per-user cache of exported bundles (the demo's built-in model lives here)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from opticam_rt.bundle import Bundle, load_bundle
from opticam_rt.errors import BundleError

#: Environment variable that overrides the cache directory.
CACHE_ENV = "OPTICAM_RT_CACHE"


def cache_dir() -> Path:
    """$OPTICAM_RT_CACHE, else $XDG_CACHE_HOME/opticam-rt, else ~/.cache/opticam-rt."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "opticam-rt"


def default_records_path(command: str, *inputs: str) -> Path:
    """Where a command's per-image records go when neither --records nor --out names a place:
    the cache, one file per command and inputs (their absolute paths), so a rerun on the same
    inputs resumes and nothing is written into the current folder.

    >>> default_records_path("eval", "bundles/effnet", "photos/").name  # doctest: +SKIP
    'eval-3f2a9c1d04be.records.jsonl'
    """
    key = "\0".join(str(Path(p).resolve()) for p in inputs)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "records" / f"{command}-{digest}.records.jsonl"


def builtin_bundle(
    name: str = "efficientnet-lite0", verify: bool = False, log: Callable[[str], None] | None = None
) -> Bundle:
    """The cached bundle of a built-in model, exported on first use (or when the cache is damaged)."""
    from opticam_rt.export import export_bundle, load_recipe

    path = cache_dir() / name
    try:
        return load_bundle(path)
    except BundleError as exc:
        if path.exists() and log:
            log(f"cached bundle unusable ({exc}); exporting again")
    if log:
        log(f"exporting the built-in {name} to {path} (once; a few minutes on 2 cores)")
    recipe = load_recipe(name)
    bundle, _ = export_bundle(
        recipe.build(),
        path,
        tap=recipe.tap,  # type: ignore[arg-type]
        input_size=recipe.input_size,  # type: ignore[arg-type]
        mean=recipe.mean,  # type: ignore[arg-type]
        std=recipe.std,  # type: ignore[arg-type]
        class_names=recipe.class_names,
        model_name=recipe.name,
        model_spec=name,
        force=True,
        verify=verify,
        log=log,
    )
    return bundle
