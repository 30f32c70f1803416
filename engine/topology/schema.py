"""A JSON Schema (draft 2020-12) for topology files, generated from the actor registry.

Editors (VS Code's YAML extension, JetBrains, ...) use it to complete kinds, option names and input
pads and to flag mistakes while typing.  It mirrors `load_topology()`'s structural checks: the
top-level keys, node keys and ids, restart types, links and policies, groups and supervisor
settings, and per kind (an `if kind == ... then ...` branch) the allowed options with their JSON
types, defaults and docs, the required options, and the input pad names.  What a schema cannot
express -- unknown link targets, cycles, formats -- stays with the loader (`mediaengine validate`).

Options that are not free strings (numbers, booleans, choices, lists) also accept a whole
`"${VAR}"` string, as the loader does.  A kind
whose module fails to import is still listed, without constraints, and says why in its description.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal

from ..sdk.actor import POLICIES, is_template, template_regex
from ..sdk.errors import UnknownKindError
from .loader import (
    GROUP_RESTARTS,
    ID_PATTERN,
    RESTARTS,
    STRATEGIES,
    VERSION,
    SupervisorSpec,
)
from .registry import get_kind, kind_names, kind_summary, option_table

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_VAR_STRING = {"type": "string", "pattern": r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^{}]*)?\}$"}
_ID = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}


def json_type(hint: Any) -> dict[str, Any]:
    """The JSON Schema for values of Python type `hint` as `mediaengine.sdk.actor.coerce` accepts them."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return {}
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [json_type(a) for a in args]}
    if origin in (list, tuple) or hint in (list, tuple):
        return {"type": "array", "items": json_type(args[0])} if args else {"type": "array"}
    if hint is type(None):
        return {"type": "null"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}
    if hint in simple:
        return {"type": simple[hint]}
    if origin is dict:
        return {"type": "object"}
    return {}


def _accepts_any_string(schema: dict[str, Any]) -> bool:
    """True if `schema` accepts every string (so also an unexpanded "${VAR}")."""
    if not schema or schema.get("type") == "string":
        return True
    return any(_accepts_any_string(s) for s in schema.get("anyOf", []))


def _option_schema(entry: dict[str, Any]) -> dict[str, Any]:
    schema = json_type(entry["hint"])
    if "choices" in entry:
        schema = {"enum": list(entry["choices"])}
    lo, hi = entry.get("range") or (None, None)
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    if not _accepts_any_string(schema):
        schema = {"anyOf": [schema, _VAR_STRING]}
    if entry["doc"]:
        schema["description"] = entry["doc"] + (" (live)" if entry["live"] else "")
    if not entry["required"]:
        schema["default"] = entry["default"]
    return schema


def _kind_schema(name: str) -> dict[str, Any]:
    try:
        cls = get_kind(name)
    except UnknownKindError as exc:
        return {"description": f"kind {name} could not be loaded: {exc}"}
    table = option_table(cls)
    required_options = [e["name"] for e in table if e["required"]]
    options: dict[str, Any] = {
        "type": "object" if required_options else ["object", "null"],
        "properties": {e["name"]: _option_schema(e) for e in table},
        "additionalProperties": False,
    }
    if required_options:
        options["required"] = required_options
    fixed = [pad for pad in cls.inputs if not is_template(pad)]
    templates = [f"^{template_regex(pad).pattern}$" for pad in cls.inputs if is_template(pad)]
    inputs: dict[str, Any] = {"type": ["object", "null"]}
    if not cls.inputs:
        inputs["maxProperties"] = 0
    else:
        inputs["propertyNames"] = {"anyOf": [{"enum": fixed}, *({"pattern": p} for p in templates)]}
    required_pads = [pad for pad, port in cls.inputs.items() if port.required and not is_template(pad)]
    constraints: list[dict[str, Any]] = []
    for pad, port in cls.inputs.items():
        if port.required and is_template(pad):  # at least one property name matches the template
            pattern = f"^{template_regex(pad).pattern}$"
            constraints.append({"not": {"propertyNames": {"not": {"pattern": pattern}}}})
    if required_pads or constraints:
        inputs["type"] = "object"
    if required_pads:
        inputs["required"] = required_pads
    if constraints:
        inputs["allOf"] = constraints
    node_required = (["options"] if required_options else []) + (["inputs"] if inputs["type"] == "object"
                                                                  else [])
    out: dict[str, Any] = {"description": kind_summary(cls),
                           "properties": {"options": options, "inputs": inputs}}
    if node_required:
        out["required"] = node_required
    return out


def _supervisor_schema() -> dict[str, Any]:
    props: dict[str, Any] = {}
    for f in dataclasses.fields(SupervisorSpec):
        if f.name == "intensity":
            props[f.name] = {"type": "integer", "minimum": 1, "default": f.default}
        elif f.name in ("backoff_initial_s", "stable_s"):
            props[f.name] = {"type": "number", "minimum": 0, "default": f.default}
        else:
            props[f.name] = {"type": "number", "exclusiveMinimum": 0, "default": f.default}
    return {"type": "object", "properties": props, "additionalProperties": False}


def topology_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) for topology files, for every kind the registry knows."""
    kinds = kind_names()
    ref = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}(/[A-Za-z0-9_]+)?$"}
    link = {"oneOf": [
        ref,
        {"type": "object", "required": ["from"], "additionalProperties": False,
         "properties": {"from": ref, "policy": {"enum": list(POLICIES)}}},
    ]}
    node = {
        "type": "object",
        "required": ["id", "kind"],
        "additionalProperties": False,
        "properties": {
            "id": _ID,
            "kind": {"enum": kinds},
            "options": {"type": ["object", "null"]},
            "inputs": {"type": ["object", "null"], "additionalProperties": {"$ref": "#/$defs/link"}},
            "restart": {"enum": list(RESTARTS), "default": "permanent"},
        },
        "allOf": [{"if": {"properties": {"kind": {"const": k}}, "required": ["kind"]},
                   "then": {"$ref": f"#/$defs/kinds/{k}"}} for k in kinds],
    }
    group = {
        "type": "object",
        "required": ["members"],
        "additionalProperties": False,
        "properties": {
            "members": {"type": "array", "items": _ID, "minItems": 1, "uniqueItems": True},
            "strategy": {"enum": list(STRATEGIES), "default": "one_for_one"},
            "intensity": {"type": "integer", "minimum": 1},
            "period_s": {"type": "number", "exclusiveMinimum": 0},
            "restart": {"enum": list(GROUP_RESTARTS), "default": "permanent"},
        },
    }
    return {
        "$schema": DRAFT,
        "title": "mediaengine topology",
        "description": "A graph of actors: nodes with kind, options and inputs, plus supervision.",
        "type": "object",
        "required": ["version", "nodes"],
        "additionalProperties": False,
        "properties": {
            "version": {"const": VERSION},
            "name": {"type": "string", "minLength": 1},
            "output_dir": {"type": "string", "minLength": 1, "default": ".",
                           "description": "the only folder control commands may write files into"},
            "supervisor": _supervisor_schema(),
            "nodes": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/node"}},
            "groups": {"type": ["object", "null"], "propertyNames": _ID,
                       "additionalProperties": {"$ref": "#/$defs/group"}},
        },
        "$defs": {"node": node, "link": link, "group": group,
                  "kinds": {k: _kind_schema(k) for k in kinds}},
    }
