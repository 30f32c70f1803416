"""Actor kinds by name: the `kind:` of a topology node resolved to an `Actor` subclass.

A kind is a module in the `actors` package; its file name is the kind name (`actors/audio_mixer.py`
is `kind: audio_mixer`) and its class is the one `Actor` subclass the module defines.  Names are
listed with `pkgutil` without importing anything; a module is imported the first time its kind is
asked for, so a topology that does not use the beauty filter never imports MediaPipe.

Extra kinds (tests, plugins) are added with `register()`; they take precedence over modules.

A kind that cannot be used -- unknown name, module that fails to import, module without exactly one
actor class, class whose declarations are malformed -- raises `UnknownKindError` whose message names
the module and the cause (the original exception is chained), never a bare traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import pkgutil
import re
import types
from collections.abc import Mapping
from typing import Any

from ..sdk.actor import Actor, InPort, OutPort
from ..sdk.errors import UnknownKindError
from ..sdk.options import check_declared, option_fields, option_spec, resolved_hints, type_name

ActorClass = type[Actor[Any]]

#: the package that holds one module per kind
PACKAGE = "mediaengine.actors"
#: what a kind name looks like (a Python module name)
KIND_NAME = re.compile(r"[a-z][a-z0-9_]*")

_registered: dict[str, ActorClass] = {}
_loaded: dict[str, ActorClass] = {}


# ---- names -------------------------------------------------------------------------------------

def _module_names() -> list[str]:
    package = importlib.import_module(PACKAGE)
    names = []
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and KIND_NAME.fullmatch(info.name):
            names.append(info.name)
    return names


def kind_names() -> list[str]:
    """Every kind name, sorted: the modules in `actors/` plus registered kinds (nothing is imported)."""
    return sorted(set(_module_names()) | set(_registered))


def close_match(word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The choice that most looks like `word`, if any looks enough like it ("did you mean" hints).

    Similarity is difflib's ratio, with a bonus for the same first letter (typos rarely hit it);
    a choice that is a prefix of `word` or the other way round also counts (`in` for `input`).
    """
    low = word.lower()
    best: tuple[float, str] | None = None
    for choice in sorted(choices):
        score = difflib.SequenceMatcher(None, low, choice.lower()).ratio()
        if score < 0.6 and not (low.startswith(choice.lower()) or choice.lower().startswith(low)):
            continue
        score += 0.1 if low[:1] == choice[:1].lower() else 0.0
        if best is None or score > best[0]:
            best = (score, choice)
    return best[1] if best else None


def did_you_mean(word: str, choices: list[str] | tuple[str, ...] | set[str]) -> str:
    """`"; did you mean 'x'?"` when a choice is close to `word`, else ``""``."""
    match = close_match(word, choices) if word else None
    return f"; did you mean {match!r}?" if match else ""


# ---- lookup ------------------------------------------------------------------------------------

def get_kind(name: str) -> ActorClass:
    """The actor class for kind `name`, importing `actors.<name>` on first use."""
    if name in _registered:
        return _registered[name]
    if name in _loaded:
        return _loaded[name]
    known = kind_names()
    if not isinstance(name, str) or name not in known:
        hint = did_you_mean(str(name), known)
        raise UnknownKindError(f"unknown kind {name!r}{hint} (known kinds: {', '.join(known) or 'none'})")
    module_name = f"{PACKAGE}.{name}"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of an actor module becomes one clear error
        raise UnknownKindError(
            f"kind {name!r} is not available: importing {module_name} failed with "
            f"{type(exc).__name__}: {exc}") from exc
    cls = _actor_class(name, module)
    check_kind(name, cls)
    _loaded[name] = cls
    return cls


def _actor_class(name: str, module: types.ModuleType) -> ActorClass:
    candidates = [obj for obj in vars(module).values()
                  if isinstance(obj, type) and issubclass(obj, Actor) and obj is not Actor
                  and obj.__module__ == module.__name__]
    public = [c for c in candidates if not c.__name__.startswith("_")]
    if len(public) > 1:
        # a module may define a helper base class; the kind's class is named after the module
        camel = "".join(part.capitalize() for part in name.split("_"))
        named = [c for c in public if c.__name__.lower() == camel.lower()]
        public = named or public
    if len(public) != 1:
        found = ", ".join(sorted(c.__name__ for c in public)) or "none"
        raise UnknownKindError(
            f"kind {name!r} is not available: {module.__name__} must define exactly one public "
            f"Actor subclass (found: {found})")
    return public[0]


def check_kind(name: str, cls: ActorClass) -> None:
    """Raise `UnknownKindError` unless `cls` declares its ports and options the way the loader needs."""
    def broken(why: str) -> UnknownKindError:
        return UnknownKindError(f"kind {name!r} ({cls.__module__}.{cls.__qualname__}) is malformed: {why}")

    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise UnknownKindError(f"kind {name!r}: {cls!r} is not an Actor subclass")
    for attr, port_type in (("inputs", InPort), ("outputs", OutPort)):
        table = getattr(cls, attr)
        if not isinstance(table, Mapping):
            raise broken(f"`{attr}` must be a mapping of pad name -> {port_type.__name__}")
        for pad, port in table.items():
            if not isinstance(pad, str) or not isinstance(port, port_type):
                raise broken(f"`{attr}[{pad!r}]` must be a {port_type.__name__}")
    if not dataclasses.is_dataclass(cls.Options) or not isinstance(cls.Options, type):
        raise broken("`Options` must be a dataclass")
    try:
        hints = resolved_hints(cls.Options)
    except Exception as exc:  # NameError/TypeError from unresolvable annotations
        raise broken(f"the annotations of Options cannot be resolved ({type(exc).__name__}: {exc})") from exc
    fields = option_fields(cls.Options)
    missing = [f for f in fields if f not in hints]
    if missing:
        raise broken(f"Options fields without a type: {', '.join(missing)}")
    for fname, f in fields.items():
        spec = option_spec(f)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if default is not dataclasses.MISSING:
            reason = check_declared(default, spec)
            if reason is not None:
                raise broken(f"the default of option {fname!r} breaks its own declaration: {reason}")


def all_kinds() -> dict[str, ActorClass]:
    """Every kind, imported (raises on the first kind that cannot be loaded)."""
    return {name: get_kind(name) for name in kind_names()}


def register(name: str, cls: ActorClass) -> None:
    """Add (or replace) kind `name` without a module in `actors/` (tests, plugins)."""
    if not isinstance(name, str) or not KIND_NAME.fullmatch(name):
        raise ValueError(f"kind name {name!r} must match {KIND_NAME.pattern}")
    check_kind(name, cls)
    _registered[name] = cls


def unregister(name: str) -> None:
    """Remove a kind added with `register()` (no error if it is not registered)."""
    _registered.pop(name, None)


# ---- description (for `mediaengine kinds` and the JSON schema) ---------------------------------

def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    text = inspect.cleandoc(doc)
    return " ".join(text.split("\n\n", 1)[0].split())


def option_table(cls: ActorClass) -> list[dict[str, Any]]:
    """One entry per settable option, from its `option()` declaration: name, type (hint and readable),
    required, default, live, range and choices when declared, doc."""
    hints = resolved_hints(cls.Options)
    out = []
    for name, f in option_fields(cls.Options).items():
        spec = option_spec(f)
        entry: dict[str, Any] = {"name": name, "type": type_name(hints[name]), "hint": hints[name]}
        if f.default is not dataclasses.MISSING:
            entry.update(required=False, default=_jsonable(f.default))
        elif f.default_factory is not dataclasses.MISSING:
            entry.update(required=False, default=_jsonable(f.default_factory()))
        else:
            entry.update(required=True)
        entry["live"] = spec.live
        if spec.range is not None:
            entry["range"] = list(spec.range)
        if spec.choices is not None:
            entry["choices"] = _jsonable(spec.choices)
        entry["doc"] = spec.doc
        out.append(entry)
    return out


def kind_summary(cls: ActorClass) -> str:
    """The first paragraph of the class docstring, else of its module's docstring."""
    module = inspect.getmodule(cls)
    return _first_paragraph(cls.__doc__) or _first_paragraph(module.__doc__ if module else None)


def describe_kind(name: str) -> dict[str, Any]:
    """A JSON-friendly description of kind `name` (for `mediaengine kinds`).

    Keys: `kind`, `class`, `summary`, `is_source`, `inputs` (pad -> kind, codecs, pix_fmts, policy,
    required), `outputs` (pad -> kind, default, and pix_fmts when a video pad can emit several) and
    `options` (a list of name, type, required, default, live, range and choices when declared, doc),
    all read from the `option()` declarations.
    """
    cls = get_kind(name)
    inputs = {pad: {"kind": port.kind, "codecs": list(port.codecs),
                    "pix_fmts": list(port.pix_fmts) if port.kind == "video" else [],
                    "policy": port.policy, "required": port.required}
              for pad, port in cls.inputs.items()}
    default_out = cls.default_output()
    outputs = {pad: {"kind": port.kind, "default": pad == default_out,
                     **({"pix_fmts": list(port.pix_fmts)} if port.kind == "video" and port.pix_fmts else {})}
               for pad, port in cls.outputs.items()}
    options = [{k: v for k, v in entry.items() if k != "hint"} for entry in option_table(cls)]
    return {"kind": name, "class": f"{cls.__module__}.{cls.__qualname__}", "summary": kind_summary(cls),
            "is_source": bool(cls.is_source or not cls.inputs), "inputs": inputs, "outputs": outputs,
            "options": options}
