"""The one place the CLI collects a method's options from its click parameters."""

from __future__ import annotations

from typing import Any

#: Method name -> the command parameters that are its options (passed to the library as a dict).
METHOD_OPTION_PARAMS: dict[str, tuple[str, ...]] = {"opti-cam": ("iterations", "lr", "loss", "tol", "pipeline")}


def method_options(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """The options of ``method`` among a command's click parameters (``ctx.params``), as a plain dict.

    ``explain`` passes them to the library; ``evaluate`` passes them too and keys its saved
    records by them, so a record is reused only for the same options.
    """
    return {name: params[name] for name in METHOD_OPTION_PARAMS.get(method, ()) if name in params}
