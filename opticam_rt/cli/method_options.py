"""Method option flags generated from the methods' declarations (one source for API and CLI)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import click

from opticam_rt.errors import InputError
from opticam_rt.methods.options import OptionInfo
from opticam_rt.methods import REGISTRY


def declared_options(methods: Sequence[str] | None = None) -> dict[str, tuple[OptionInfo, list[str]]]:
    """Option name -> (its declaration, the methods that declare it), over ``methods`` (default:
    every registered method).

    One flag serves every method declaring that name, so declarations must agree on the type;
    the ranges and defaults stay per method (the library checks them).
    """
    found: dict[str, tuple[OptionInfo, list[str]]] = {}
    for method in methods or REGISTRY:
        for info in REGISTRY[method].Options.infos():
            if info.name in found:
                first, methods = found[info.name]
                if first.kind is not info.kind or first.spec.choices != info.spec.choices:
                    raise TypeError(f"option {info.name!r}: {methods[0]} and {method} declare different types")
                methods.append(method)
            else:
                found[info.name] = (info, [method])
    return found


def _flag(info: OptionInfo, methods: list[str]) -> Callable[[Any], Any]:
    defaults = {m: next(i.default for i in REGISTRY[m].Options.infos() if i.name == info.name) for m in methods}
    defaults = {m: "unset" if d is None else d for m, d in defaults.items()}
    shown = ", ".join(f"{m}: {d}" for m, d in defaults.items()) if len(set(map(str, defaults.values()))) > 1 else str(
        next(iter(defaults.values())))
    kind: Any = click.Choice(info.spec.choices) if info.spec.choices else info.kind
    return click.option(
        f"--{info.name.replace('_', '-')}",
        info.name,
        type=kind,
        default=None,
        help=f"[{', '.join(methods)}] {info.spec.help} [default: {shown}]",
    )


def method_option_flags(methods: Sequence[str] | None = None) -> Callable[[Any], Any]:
    """A decorator adding one flag per option declared by ``methods`` (default: all); the command
    receives them as keyword arguments (None when not given) and passes them through
    :func:`pop_method_options` and :func:`options_for`."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for info, users in reversed(list(declared_options(methods).values())):
            command = _flag(info, users)(command)
        return command

    return decorate


def pop_method_options(params: dict[str, Any]) -> dict[str, Any]:
    """Remove the method option flags from a command's keyword arguments; -> the ones given."""
    given = {}
    for name in declared_options():
        value = params.pop(name, None)
        if value is not None:
            given[name] = value
    return given


def options_for(methods: Sequence[str], given: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Split the given flags among ``methods`` (each takes the options it declares), checked
    against the declarations before any work starts.

    Raises:
        InputError: a flag that none of ``methods`` declares (naming the methods that do), or a
            value out of its range.
    """
    declared = declared_options()
    for name in given:
        if not any(name in REGISTRY[m].Options.names() for m in methods):
            users = declared[name][1]
            raise InputError(
                f"--{name.replace('_', '-')} applies to {', '.join(users)}, not to {', '.join(methods)}"
            )
    split = {m: {k: v for k, v in given.items() if k in REGISTRY[m].Options.names()} for m in methods}
    for m, options in split.items():
        REGISTRY[m].Options.parse(options, m)
    return split
