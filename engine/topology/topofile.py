"""Reading a topology source: strict YAML, `${VAR}` substitution, and redaction of the secrets it used.

`${VAR}` is replaced from the environment (or `${VAR:-default}`); `$${` is a literal `${`.  Every value
taken from the environment is a secret (stream keys live there): `redact` replaces them with `***`
in anything the engine prints.  YAML is parsed with a SafeLoader that rejects duplicate keys, and
errors name "line L, column C".
"""

from __future__ import annotations

import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ..sdk.errors import FileError, TopologySyntaxError, VariableError
from ..sdk.redact import redact_text

VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def redact(text: str, secrets: frozenset[str] | set[str]) -> str:
    """`text` with every URL redacted and each secret replaced by ``***`` (see `mediaengine.sdk.redact`)."""
    return redact_text(text, secrets)


# ---- reading -----------------------------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of keeping the last one, and refuses YAML
    aliases (`*name`, also in `<<: *name` merges): an alias shares a subtree, so a few nested ones
    ("billion laughs") expand into a structure too large to walk, and `${VAR}` substitution, the
    loader and `validate` walk every value."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            mark = event.start_mark
            raise TopologySyntaxError(
                f"YAML aliases are not allowed in a topology (*{event.anchor}); write the value out",
                where=f"line {mark.line + 1}, column {mark.column + 1}")
        return super().compose_node(parent, index)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        mark = key_node.start_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        if not isinstance(key, Hashable):
            raise TopologySyntaxError("a mapping key must be a plain value", where=where)
        if key in out:
            raise TopologySyntaxError(f"duplicate key {key!r}", where=where)
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str) -> Any:
    """Parse YAML text; errors become `TopologySyntaxError` at "line L, column C"."""
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise TopologySyntaxError(f"not valid YAML: {problem}", where=where) from None
    except yaml.YAMLError as exc:
        raise TopologySyntaxError(f"not valid YAML: {exc}") from None


def read_source(source: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[Any, str, str]:
    """(document, origin for `Topology.source`, default name)."""
    if not isinstance(source, str | os.PathLike):  # an already parsed document (checked by the caller)
        return source, "<dict>", "topology"
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileError("no such topology file", where=str(path)) from None
    except IsADirectoryError:
        raise FileError("is a directory, not a topology file", where=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FileError(f"cannot read topology file: {exc}", where=str(path)) from None
    return parse_yaml(text), str(path), path.stem


# ---- ${VAR} substitution -----------------------------------------------------------------------

_REF = re.compile(r"\$\$\{|\$\{(?P<body>[^{}]*)(?P<close>\}?)")


def subst_string(text: str, where: str, env: Mapping[str, str], secrets: set[str]) -> tuple[str, bool]:
    """(text with `${VAR}` replaced, whether the whole string was one reference)."""
    out: list[str] = []
    pos = 0
    whole = False
    for m in _REF.finditer(text):
        out.append(text[pos:m.start()])
        pos = m.end()
        if m.group(0) == "$${":
            out.append("${")
            continue
        body = m.group("body")
        if not m.group("close"):
            raise VariableError(f"unterminated '${{' in {text!r}; write '$${{' for a literal '${{'",
                                where=where)
        name, sep, default = body.partition(":-")
        if not VAR_NAME.fullmatch(name):
            raise VariableError(f"bad variable name {name!r} in '${{{body}}}' (letters, digits and _; "
                                "write '$${' for a literal '${')", where=where)
        if name in env:
            value = env[name]
            if value:
                secrets.add(value)
        elif sep:
            value = default
        else:
            raise VariableError(f"environment variable {name} is not set; set it (export {name}=...) "
                                f"or give a default with '${{{name}:-default}}'", where=where)
        out.append(value)
        whole = m.start() == 0 and m.end() == len(text)
    out.append(text[pos:])
    return "".join(out), whole


def substitute(value: Any, where: str, env: Mapping[str, str], secrets: set[str],
                whole: set[str]) -> Any:
    if isinstance(value, str):
        new, is_whole = subst_string(value, where or "(top level)", env, secrets)
        if is_whole:
            whole.add(where)
        return new
    if isinstance(value, Mapping):
        return {k: substitute(v, join_path(where, k), env, secrets, whole) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(v, f"{where}[{i}]", env, secrets, whole) for i, v in enumerate(value)]
    return value


def join_path(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def parse_cli_value(text: str) -> Any:
    """A `key=value` value from the command line (`--set`, `ctl`): numbers, booleans and null as YAML
    reads them, `[...]` / `{...}` as lists and maps, anything else as the plain string, so that
    `text=Q1: who wins?` stays a string instead of becoming a YAML mapping."""
    if not text.strip():
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        if text.lstrip().startswith(("[", "{")):
            raise ValueError(f"cannot read value {text!r}: {exc}") from None
        return text
    if isinstance(value, dict | list) and not text.lstrip().startswith(("[", "{")):
        return text
    return value
