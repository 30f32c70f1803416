"""Actor options declared once: type, default, range or choices, live or not, and the doc.

An actor's `Options` is a frozen dataclass; each field is declared with `option()` (GStreamer's
`g_param_spec_*`, Membrane's `def_options`)::

    @dataclass(frozen=True)
    class EncoderOptions:
        bitrate_kbps: int = option(1200, range=(100, 20000), live=True, doc="target bit rate")
        preset: str = option("veryfast", choices=PRESETS, doc="x264 preset")
        path: str = option(doc="output file")          # no default: required

Everything reads that declaration: the loader (type, range, choices), `set` on a running actor
(`apply_set`: live or not, type, range), `mediaengine kinds` and the JSON schema (doc, range, live).
Rules that involve several options (or the input formats) go in the actor's one
`validate(options, input_formats)` classmethod.  The loader validates once; the actor process gets
the validated, frozen instance and never validates again.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import OptionError

#: the key under which `option()` stores its `OptionSpec` in the field's metadata
META_KEY = "mediaengine.option"


@dataclass(frozen=True)
class OptionSpec:
    """What `option()` declares besides type and default."""

    live: bool = False  # `set` may change it while the actor runs
    range: tuple[float | None, float | None] | None = None  # inclusive bounds; None = unbounded side
    choices: tuple[Any, ...] | None = None  # the only values allowed
    doc: str = ""  # one line for `kinds`, the schema and the docs


def option(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
           range: tuple[float | None, float | None] | None = None,
           choices: tuple[Any, ...] | list[Any] | None = None, live: bool = False, doc: str = "") -> Any:
    """A dataclass field carrying its `OptionSpec`; without `default` (or `factory`) it is required."""
    meta = {META_KEY: OptionSpec(live=live, range=range,
                                 choices=tuple(choices) if choices is not None else None, doc=doc)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def option_fields(options_cls: type[Any]) -> dict[str, dataclasses.Field[Any]]:
    """The init fields of an options dataclass, by name, in declaration order."""
    return {f.name: f for f in dataclasses.fields(options_cls) if f.init}


def option_spec(f: dataclasses.Field[Any]) -> OptionSpec:
    """The declaration of field `f` (a plain field declares nothing: not live, no range, no doc)."""
    spec = f.metadata.get(META_KEY)
    return spec if isinstance(spec, OptionSpec) else OptionSpec()


def option_specs(options_cls: type[Any]) -> dict[str, OptionSpec]:
    return {name: option_spec(f) for name, f in option_fields(options_cls).items()}


def live_option_names(options_cls: type[Any]) -> tuple[str, ...]:
    """Names of the options `set` may change while running, in declaration order."""
    return tuple(name for name, spec in option_specs(options_cls).items() if spec.live)


def resolved_hints(options_cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(options_cls)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Check `value` against type `tp`; ints are accepted for floats.  Returns (ok, value)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin is Literal:
        return (value in typing.get_args(tp)), value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = coerce(value, arg)
            if ok:
                return True, v
        return False, value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            return False, value
        args = typing.get_args(tp)
        if not args:
            return True, tuple(value)
        out = []
        for item in value:
            ok, v = coerce(item, args[0])
            if not ok:
                return False, value
            out.append(v)
        return True, tuple(out)
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        return isinstance(value, int | float), float(value) if isinstance(value, int | float) else value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if tp is dict:
        return isinstance(value, dict), value
    return isinstance(value, tp), value


def _bound(x: float) -> str:
    return f"{x:g}"


def range_text(bounds: tuple[float | None, float | None]) -> str:
    lo, hi = bounds
    if lo is not None and hi is not None:
        return f"{_bound(lo)}..{_bound(hi)}"
    return f">= {_bound(lo)}" if lo is not None else f"<= {_bound(hi)}" if hi is not None else "any"


def check_declared(value: Any, spec: OptionSpec) -> str | None:
    """None if an already type-checked `value` satisfies the declared range and choices, else why not."""
    if spec.choices is not None and value not in spec.choices:
        return f"{value!r} is not one of {', '.join(repr(c) for c in spec.choices)}"
    if spec.range is not None and isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = spec.range
        if (isinstance(value, float) and not math.isfinite(value)) or (lo is not None and value < lo) or (
                hi is not None and value > hi):
            return f"{value:g} is out of range {range_text(spec.range)}"
    return None


def apply_set(options_cls: type[Any], options: Any, changes: Mapping[str, Any], *, node_id: str,
              validate: Callable[[Any], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """The option setting of `set` on a running actor, as a pure function.

    Returns (new frozen options, {name: coerced value}); raises `OptionError` (code 1108) naming
    `node.option` for an unknown option, one that is not live, a wrong type or a value outside its
    declared range or choices.  `validate(new_options)` then checks the rules across options (the
    actor's `validate` classmethod with its input formats).  Used by the actor runtime and by
    `mediaengine.testing.ActorHarness`, so a test sees exactly what a running actor sees.
    """
    fields = option_fields(options_cls)
    hints = resolved_hints(options_cls)
    live = live_option_names(options_cls)
    known = ", ".join(live) or "none"
    new_values: dict[str, Any] = {}
    for name, value in changes.items():
        where = f"{node_id}.{name}"
        if not isinstance(name, str) or name not in fields:
            raise OptionError(f"unknown option {name!r}; options changeable while running: {known}", where=where)
        if name not in live:
            raise OptionError(f"option {name!r} cannot change while running; live options: {known}", where=where)
        ok, coerced = coerce(value, hints[name])
        if not ok:
            raise OptionError(f"expected {hints[name]!r}, got {value!r}", where=where)
        reason = check_declared(coerced, option_spec(fields[name]))
        if reason is not None:
            raise OptionError(reason, where=where)
        new_values[name] = coerced
    new_options = dataclasses.replace(options, **new_values)
    if validate is not None:
        try:
            validate(new_options)
        except OptionError as exc:
            if exc.where and exc.where.startswith(f"{node_id}."):
                raise
            culprit = exc.where if exc.where in fields else next(iter(new_values)) if len(new_values) == 1 else None
            raise OptionError(exc.message, where=f"{node_id}.{culprit}" if culprit else node_id) from exc
    return new_options, new_values


def check_instance(options: Any) -> None:
    """Check an already built Options instance against its declarations (type, range, choices).

    The loader checks values as it builds the instance; this is for instances built in code (the
    test harness, plugins), so they pass the same single-option checks.  Raises `OptionError`
    naming the option.
    """
    fields = option_fields(type(options))
    hints = resolved_hints(type(options))
    for name, f in fields.items():
        value = getattr(options, name)
        ok, _ = coerce(value, hints[name])
        if not ok:
            raise OptionError(f"expected {type_name(hints[name])}, got {value!r}", where=name)
        reason = check_declared(value, option_spec(f))
        if reason is not None:
            raise OptionError(reason, where=name)
