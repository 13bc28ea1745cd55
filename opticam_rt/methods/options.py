"""Typed method options: each method declares its options once, as a frozen dataclass.

The declaration (type, default, range, choices, help) is read by the API, which rejects unknown
names and bad values with a one-line error, and by the CLI, which generates its flags from it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

from opticam_rt.errors import InputError

T = TypeVar("T", bound="MethodOptions")


@dataclass(frozen=True)
class OptionSpec:
    """How one option is checked and shown. ``low``/``high`` are inclusive bounds; ``positive``
    excludes 0. Floats must be finite."""

    help: str
    low: float | None = None
    high: float | None = None
    positive: bool = False
    choices: tuple[str, ...] | None = None


def option(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field with its OptionSpec (see there for ``low``, ``high``, ``positive``, ``choices``)."""
    return dataclasses.field(default=default, metadata={"spec": OptionSpec(help=help, **spec)})


@dataclass(frozen=True)
class OptionInfo:
    """One declared option, as the CLI and the docs see it. ``kind`` is int, float or str."""

    name: str
    kind: type
    default: Any
    optional: bool
    spec: OptionSpec


@dataclass(frozen=True)
class MethodOptions:
    """Base of every method's options. Subclasses add fields made with :func:`option`."""

    @classmethod
    def infos(cls) -> list[OptionInfo]:
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            kind, optional = _kind(hints[f.name])
            out.append(OptionInfo(f.name, kind, f.default, optional, f.metadata["spec"]))
        return out

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def parse(cls: type[T], given: Mapping[str, Any], method: str) -> T:
        """Options of ``method`` from keyword values; unknown names and bad values raise
        InputError naming the method, the option and what it accepts."""
        known = cls.names()
        for name in given:
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                listed = ", ".join(known) if known else "none"
                raise InputError(f"{method} has no option {name!r}{hint}; its options are: {listed}")
        values = {}
        for info in cls.infos():
            if info.name in given:
                values[info.name] = _check(method, info, given[info.name])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _kind(hint: Any) -> tuple[type, bool]:
    args = typing.get_args(hint)
    if type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return hint, False


def _check(method: str, info: OptionInfo, value: Any) -> Any:
    where = f"{method} option {info.name}"
    spec = info.spec
    if value is None:
        if info.optional:
            return None
        raise InputError(f"{where} needs a value (default {info.default!r})")
    if info.kind is int:
        if isinstance(value, bool) or not isinstance(value, (int,)) and not (isinstance(value, float) and value.is_integer()):
            raise InputError(f"{where} must be an integer, got {value!r}")
        value = int(value)
    elif info.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise InputError(f"{where} must be a finite number, got {value!r}")
    elif info.kind is str:
        if not isinstance(value, str):
            raise InputError(f"{where} must be a string, got {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise InputError(f"{where} must be one of {', '.join(spec.choices)}, got {value!r}")
    if spec.positive and value <= 0:
        raise InputError(f"{where} must be > 0, got {value!r}")
    if spec.low is not None and value < spec.low:
        raise InputError(f"{where} must be >= {spec.low:g}, got {value!r}")
    if spec.high is not None and value > spec.high:
        raise InputError(f"{where} must be <= {spec.high:g}, got {value!r}")
    return value


class NoOptions(MethodOptions):
    """For methods without options."""
