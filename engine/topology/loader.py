"""Topology files: YAML (or a dict) in, a checked, immutable `Topology` out.

`load_topology()` does every check that can be done without starting a process, and every error it
raises is a `TopologyError` subclass whose `where` is the place in the file, e.g.
``nodes[3].inputs.video: unknown node 'cam2'; did you mean 'cam'?``.  Steps, in order:

1. read and parse (`FileError`, `TopologySyntaxError` with line and column, duplicate keys included);
2. the top level and `version` (`TopologyVersionError`);
3. `${VAR}` substitution in every string (`$${` is a literal `${`, `${VAR:-default}` a default);
   every value taken from the environment is recorded in `Topology.secrets` so logs can redact it,
   and error messages raised here are redacted too (so are the key, password and query of every URL
   among the options, however it was given: file, `--set`, `overrides=`);
4. nodes: keys, ids, kinds (`UnknownKindError`), restart types;
5. `--set node.option=value` overrides (`${VAR}` substituted in the value), then options against the
   kind's `Options` dataclass;
6. inputs: pads, source nodes, policies, required pads; then cycles (`CycleError`, with the path)
   and a stable topological order (sources first, file order among equals);
7. groups and supervisor settings (`SupervisionError`);
8. formats: every output format computed in topological order, each video output's pixel format
   negotiated with its consumers (`topology.pixfmt`), and every link checked against the input pad
   (`FormatMismatchError`, describing both sides).

Options are validated here and only here: each option against its `option()` declaration (type,
range, choices), then the kind's `validate(options, input_formats)` for rules across options.  The
returned dataclasses are what the supervisor consumes; each node's frozen `options` instance is
handed to its actor process as it is.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ..sdk.actor import POLICIES, match_input_pad
from ..sdk.errors import (
    CycleError,
    DuplicateIdError,
    EngineError,
    FormatError,
    FormatMismatchError,
    FrameSizeError,
    OptionError,
    ResourceError,
    SupervisionError,
    TopologyError,
    TopologySyntaxError,
    TopologyVersionError,
    UnknownKindError,
    UnknownNodeError,
    UnknownPadError,
    UnlinkedInputError,
)
from ..sdk.formats import Format, VideoFormat, check_frame_size
from ..sdk.options import check_declared, coerce, option_fields, option_spec, resolved_hints, type_name
from ..sdk.redact import url_secrets
from ..supervision.policy import Restart, Strategy
from .pixfmt import Reader, choose_pix_fmt, emittable
from .registry import ActorClass, did_you_mean, get_kind
from .topofile import join_path, parse_cli_value, read_source, redact, subst_string, substitute

VERSION = 1
ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
RESTARTS: tuple[str, ...] = tuple(r.value for r in Restart)  # the enums in supervision/policy.py
GROUP_RESTARTS = ("permanent", "temporary")  # what a group does when its own intensity is exceeded
STRATEGIES: tuple[str, ...] = tuple(s.value for s in Strategy)
TOP_KEYS = ("version", "name", "output_dir", "supervisor", "nodes", "groups")
NODE_KEYS = ("id", "kind", "options", "inputs", "restart")
GROUP_KEYS = ("members", "strategy", "intensity", "period_s", "restart")
LINK_KEYS = ("from", "policy")


# ---- what the loader returns -------------------------------------------------------------------

@dataclass(frozen=True)
class EdgeSpec:
    """One link: `src/src_pad` feeds `dst/dst_pad` with an overflow policy and a checked format."""

    src: str
    src_pad: str
    dst: str
    dst_pad: str
    policy: str
    format: Format


@dataclass(frozen=True)
class NodeSpec:
    id: str
    kind: str
    index: int  # position in the file's `nodes` list
    options: Any  # the validated, frozen Options instance (what the actor process is given)
    restart: str
    inputs: dict[str, EdgeSpec]  # dst pad -> edge
    outputs: dict[str, tuple[EdgeSpec, ...]]  # every declared output pad -> edges it feeds, consumer order
    input_formats: dict[str, Format]
    output_formats: dict[str, Format]
    group: str | None
    is_source: bool  # the class says so, or no input is linked


@dataclass(frozen=True)
class GroupSpec:
    name: str
    members: tuple[str, ...]  # in topological (start) order
    strategy: str
    intensity: int
    period_s: float
    # beyond its own intensity: `permanent` escalates (the whole group restarts, counting once against
    # the engine's intensity), `temporary` gives up alone (its members stop, the engine runs on)
    restart: str = "permanent"


@dataclass(frozen=True)
class SupervisorSpec:
    intensity: int = 10  # restarts allowed within period_s before the engine gives up
    period_s: float = 60.0
    heartbeat_interval_s: float = 0.2
    heartbeat_timeout_s: float = 1.5  # silence after which an actor counts as hung
    stable_s: float = 2.0  # a restart counts as successful after this long of heartbeats
    backoff_initial_s: float = 0.0
    backoff_max_s: float = 5.0
    shutdown_timeout_s: float = 10.0
    startup_timeout_s: float = 20.0  # start until `hello` (i.e. through `setup()`) before it counts as hung


@dataclass(frozen=True)
class Topology:
    version: int
    name: str
    nodes: tuple[NodeSpec, ...]  # topological order: sources first, file order among equals
    edges: tuple[EdgeSpec, ...]
    groups: tuple[GroupSpec, ...]
    supervisor: SupervisorSpec
    secrets: frozenset[str]  # every value substituted from the environment; never print them
    source: str  # the file path, or "<dict>"
    #: the only folder control commands may write files into (absolute; `output_dir:`, default the
    #: engine's working directory); see mediaengine.sdk.outputs and docs/security.md
    output_dir: str = "."

    def node(self, id: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.id == id:
                return spec
        ids = [n.id for n in self.nodes]
        raise UnknownNodeError(f"unknown node {id!r}{did_you_mean(id, ids)}")

    def downstream(self, id: str, *, direct: bool = False) -> list[str]:
        """Nodes fed by `id` (directly only, or transitively), in topological order."""
        self.node(id)
        reached = {id}
        if direct:
            reached |= {e.dst for e in self.edges if e.src == id}
        else:
            for spec in self.nodes:  # topological order: every producer comes before its consumers
                if any(e.src in reached for e in spec.inputs.values()):
                    reached.add(spec.id)
        return [n.id for n in self.nodes if n.id in reached and n.id != id]

    def redact(self, text: str) -> str:
        """`text` with every secret replaced by ``***``."""
        return redact(text, self.secrets)


# ---- small checks ------------------------------------------------------------------------------

def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _mapping(value: Any, where: str, what: str, err: type[TopologyError]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise err(f"{what} must be a mapping, got {_show(value)}", where=where)
    for key in value:
        if not isinstance(key, str):
            raise err(f"key {key!r} must be a string", where=where)
    return dict(value)


def _check_keys(mapping: Mapping[str, Any], allowed: Sequence[str], where: str, what: str,
                err: type[TopologyError]) -> None:
    for key in mapping:
        if key not in allowed:
            raise err(f"unknown {what} key{did_you_mean(key, list(allowed))} "
                      f"(allowed: {', '.join(allowed)})", where=join_path(where, key))


def _choice(value: Any, allowed: Sequence[str], where: str, what: str, err: type[TopologyError]) -> str:
    if not isinstance(value, str) or value not in allowed:
        hint = did_you_mean(value, list(allowed)) if isinstance(value, str) else ""
        raise err(f"unknown {what} {value!r}{hint} (expected one of: {', '.join(allowed)})", where=where)
    return value


def _number(value: Any, where: str, *, integer: bool, minimum: float, strict: bool,
            err: type[TopologyError]) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value):
        expected = "an integer" if integer else "a finite number"
        raise err(f"must be {expected}, got {_show(value)}", where=where)
    if value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise err(f"must be {bound}, got {value!r}", where=where)
    return value if integer else float(value)


# ---- options -----------------------------------------------------------------------------------

def validate_options(cls: ActorClass, kind: str, given: Mapping[str, Any], *,
                     where_of: Callable[[str | None], str],
                     reparse: frozenset[str] | set[str] = frozenset()) -> Any:
    """Check `given` against the `option()` declarations of `cls.Options`; returns the Options instance.

    `where_of(name)` is the place of option `name` (None: the options mapping).  Options named in
    `reparse` hold a whole `${VAR}` string and may be read as a YAML scalar (`"30"` -> 30).
    """
    fields = option_fields(cls.Options)
    hints = resolved_hints(cls.Options)
    values: dict[str, Any] = {}
    for name, value in given.items():
        if name not in fields:
            raise OptionError(f"unknown option for kind {kind}{did_you_mean(name, list(fields))} "
                              f"(options: {', '.join(fields) or 'none'})", where=where_of(name))
        hint = hints[name]
        ok, coerced = coerce(value, hint)
        if not ok and name in reparse and isinstance(value, str):
            try:
                ok, coerced = coerce(yaml.safe_load(value), hint)
            except yaml.YAMLError:
                ok = False
        if not ok:
            raise OptionError(f"expected {type_name(hint)}, got {_show(value)}", where=where_of(name))
        reason = check_declared(coerced, option_spec(fields[name]))
        if reason is not None:
            raise OptionError(reason, where=where_of(name))
        values[name] = coerced
    for name, f in fields.items():
        if (name not in values and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING):
            raise OptionError(f"missing required option {name!r} ({type_name(hints[name])}) for kind {kind}",
                              where=where_of(None))
    try:
        options = cls.Options(**values)
    except EngineError as exc:
        inner = exc.where if exc.where in fields else None
        raise OptionError(exc.message, where=where_of(inner)) from exc
    except (ValueError, TypeError) as exc:
        raise OptionError(f"{kind}: {exc}", where=where_of(None)) from exc
    return options


def option_secrets(value: Any) -> set[str]:
    """The secret parts (`url_secrets`) of every URL among option values, however they were given."""
    if isinstance(value, str):
        return url_secrets(value) if "://" in value else set()
    if isinstance(value, Mapping):
        return set().union(*(option_secrets(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(option_secrets(v) for v in value))
    return set()


# ---- pads --------------------------------------------------------------------------------------

# is_template, template_regex and match_input_pad live in sdk/actor.py (the pads' own rules)


# ---- the builder -------------------------------------------------------------------------------

@dataclass
class _Node:
    index: int
    id: str
    kind: str
    cls: ActorClass
    raw: dict[str, Any]
    where: str
    options_given: dict[str, Any] = dataclasses.field(default_factory=dict)
    overridden: set[str] = dataclasses.field(default_factory=set)
    options: Any = None
    restart: str = "permanent"
    # (pad, declared pad or template, source node, source pad)
    links: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)
    policies: dict[str, str] = dataclasses.field(default_factory=dict)


class _Builder:
    def __init__(self, data: dict[str, Any], origin: str, default_name: str, secrets: set[str],
                 whole: set[str], overrides: Sequence[str]) -> None:
        self.data = data
        self.origin = origin
        self.default_name = default_name
        self.secrets = secrets
        self.whole = whole
        self.overrides = overrides
        self.nodes: list[_Node] = []
        self.by_id: dict[str, _Node] = {}
        self.output_dir = os.path.abspath(".")

    def build(self) -> Topology:
        data = self.data
        _check_keys(data, TOP_KEYS, "", "top-level", TopologySyntaxError)
        name = data.get("name", self.default_name)
        if not isinstance(name, str) or not name:
            raise TopologySyntaxError(f"must be a non-empty string, got {_show(name)}", where="name")
        output_dir = data.get("output_dir", ".")
        if not isinstance(output_dir, str) or not output_dir or "\0" in output_dir:
            raise TopologySyntaxError(f"must be a non-empty folder name, got {_show(output_dir)}",
                                      where="output_dir")
        self.output_dir = os.path.abspath(output_dir)  # relative to the engine's working directory
        supervisor = self._supervisor(data.get("supervisor"))
        self._nodes(data.get("nodes"))
        self._apply_overrides()
        for node in self.nodes:
            self._options(node)
            self._inputs(node)
        order = self._order()
        groups, group_of = self._groups(data.get("groups"), supervisor, order)
        return self._assemble(name, supervisor, order, groups, group_of)

    # -- supervisor and groups
    def _supervisor(self, raw: Any) -> SupervisorSpec:
        settings = _mapping(raw, "supervisor", "supervisor", SupervisionError)
        allowed = [f.name for f in dataclasses.fields(SupervisorSpec)]
        _check_keys(settings, allowed, "supervisor", "supervisor", SupervisionError)
        values: dict[str, Any] = {}
        for key, value in settings.items():
            where = f"supervisor.{key}"
            if key == "intensity":
                values[key] = _number(value, where, integer=True, minimum=1, strict=False,
                                      err=SupervisionError)
            else:
                strict = key not in ("backoff_initial_s", "stable_s")
                values[key] = _number(value, where, integer=False, minimum=0, strict=strict,
                                      err=SupervisionError)
        spec = SupervisorSpec(**values)
        if spec.heartbeat_timeout_s <= spec.heartbeat_interval_s:
            raise SupervisionError(
                f"must be longer than heartbeat_interval_s ({spec.heartbeat_interval_s:g})",
                where="supervisor.heartbeat_timeout_s")
        if spec.backoff_max_s < spec.backoff_initial_s:
            raise SupervisionError(f"must be >= backoff_initial_s ({spec.backoff_initial_s:g})",
                                   where="supervisor.backoff_max_s")
        return spec

    def _groups(self, raw: Any, sup: SupervisorSpec,
                order: list[_Node]) -> tuple[tuple[GroupSpec, ...], dict[str, str]]:
        groups_raw = _mapping(raw, "groups", "groups", SupervisionError)
        rank = {n.id: pos for pos, n in enumerate(order)}
        group_of: dict[str, str] = {}
        out = []
        for gname, graw in groups_raw.items():
            where = f"groups.{gname}"
            if not ID_PATTERN.fullmatch(gname):
                raise SupervisionError(f"bad group name {gname!r} (must match {ID_PATTERN.pattern})",
                                       where=where)
            g = _mapping(graw, where, "a group", SupervisionError)
            _check_keys(g, GROUP_KEYS, where, "group", SupervisionError)
            members = g.get("members")
            if not isinstance(members, list) or not members:
                raise SupervisionError(f"must be a non-empty list of node ids, got {_show(members)}",
                                       where=f"{where}.members")
            for j, member in enumerate(members):
                mwhere = f"{where}.members[{j}]"
                if not isinstance(member, str) or member not in self.by_id:
                    raise SupervisionError(f"unknown node {member!r}{did_you_mean(str(member), list(rank))}",
                                           where=mwhere)
                if member in group_of:
                    other = group_of[member]
                    already = "listed twice" if other == gname else f"already in group {other!r}"
                    raise SupervisionError(f"node {member!r} is {already}; a node may be in one group only",
                                           where=mwhere)
                group_of[member] = gname
            strategy = _choice(g.get("strategy", "one_for_one"), STRATEGIES, f"{where}.strategy",
                               "strategy", SupervisionError)
            intensity = _number(g.get("intensity", sup.intensity), f"{where}.intensity", integer=True,
                                minimum=1, strict=False, err=SupervisionError)
            period = _number(g.get("period_s", sup.period_s), f"{where}.period_s", integer=False,
                             minimum=0, strict=True, err=SupervisionError)
            restart = _choice(g.get("restart", "permanent"), GROUP_RESTARTS, f"{where}.restart",
                              "group restart", SupervisionError)
            ordered = tuple(sorted(members, key=rank.__getitem__))
            out.append(GroupSpec(gname, ordered, strategy, intensity, period, restart))
        return tuple(out), group_of

    # -- nodes
    def _nodes(self, raw: Any) -> None:
        if raw is None:
            raise TopologySyntaxError("missing `nodes:` (a list of nodes)", where="nodes")
        if not isinstance(raw, list):
            raise TopologySyntaxError(f"must be a list of nodes, got {_show(raw)}", where="nodes")
        if not raw:
            raise TopologySyntaxError("must list at least one node", where="nodes")
        for i, item in enumerate(raw):
            where = f"nodes[{i}]"
            if item is None:
                raise TopologySyntaxError("a node must be a mapping with `id` and `kind`", where=where)
            node = _mapping(item, where, "a node", TopologySyntaxError)
            _check_keys(node, NODE_KEYS, where, "node", TopologySyntaxError)
            for key in ("id", "kind"):
                if key not in node:
                    raise TopologySyntaxError(f"missing `{key}`", where=where)
            nid = node["id"]
            if not isinstance(nid, str) or not ID_PATTERN.fullmatch(nid):
                raise TopologySyntaxError(
                    f"bad id {nid!r}: an id starts with a letter, then up to 31 letters, digits, _ or -",
                    where=f"{where}.id")
            if nid in self.by_id:
                first = self.by_id[nid].where
                raise DuplicateIdError(f"duplicate id {nid!r} (already used by {first})", where=f"{where}.id")
            kind = node["kind"]
            if not isinstance(kind, str):
                raise UnknownKindError(f"kind must be a string, got {_show(kind)}", where=f"{where}.kind")
            try:
                cls = get_kind(kind)
            except UnknownKindError as exc:
                raise UnknownKindError(exc.message, where=f"{where}.kind") from exc
            restart = _choice(node.get("restart", "permanent"), RESTARTS, f"{where}.restart",
                              "restart type", SupervisionError)
            options = _mapping(node.get("options"), f"{where}.options", "options", OptionError)
            spec = _Node(i, nid, kind, cls, node, where, options_given=options, restart=restart)
            self.nodes.append(spec)
            self.by_id[nid] = spec

    def _apply_overrides(self) -> None:
        for item in self.overrides:
            target, sep, text = str(item).partition("=")
            node_id, dot, option = target.strip().rpartition(".")
            where = f"--set {target.strip()}"
            if not sep or not dot or not node_id or not option:
                raise OptionError(f"expected node.option=value, got {item!r}", where=f"--set {item}")
            node = self.by_id.get(node_id)
            if node is None:
                raise OptionError(f"unknown node {node_id!r}{did_you_mean(node_id, list(self.by_id))}",
                                  where=where)
            try:
                node.options_given[option] = parse_cli_value(text)
            except ValueError as exc:
                raise OptionError(str(exc), where=where) from None
            node.overridden.add(option)

    def _options(self, node: _Node) -> None:
        base = f"{node.where}.options"

        def where_of(name: str | None) -> str:
            if name is None:
                return base
            if name in node.overridden:
                return f"--set {node.id}.{name}"
            return f"{base}.{name}"

        reparse = {name for name in node.options_given
                   if f"{base}.{name}" in self.whole and name not in node.overridden}
        node.options = validate_options(node.cls, node.kind, node.options_given,
                                                          where_of=where_of, reparse=reparse)

    def _inputs(self, node: _Node) -> None:
        base = f"{node.where}.inputs"
        inputs = _mapping(node.raw.get("inputs"), base, "inputs", TopologySyntaxError)
        ports = node.cls.inputs
        for pad, link in inputs.items():
            where = f"{base}.{pad}"
            port_key = match_input_pad(pad, ports)
            if port_key is None:
                if not ports:
                    raise UnknownPadError(f"kind {node.kind} takes no inputs", where=where)
                raise UnknownPadError(
                    f"kind {node.kind} has no input pad {pad!r}{did_you_mean(pad, list(ports))} "
                    f"(input pads: {', '.join(ports)})", where=where)
            policy: str = ports[port_key].policy
            if isinstance(link, Mapping):
                _check_keys(link, LINK_KEYS, where, "input", TopologySyntaxError)
                if "from" not in link:
                    raise TopologySyntaxError("missing `from: node` or `from: node/pad`", where=where)
                ref = link["from"]
                if "policy" in link:
                    policy = _choice(link["policy"], POLICIES, f"{where}.policy", "policy", OptionError)
            else:
                ref = link
            if not isinstance(ref, str) or ref.count("/") > 1:
                raise TopologySyntaxError(
                    f"expected 'node', 'node/pad' or {{from: node/pad, policy: ...}}, got {_show(ref)}",
                    where=where)
            src_id, _, src_pad = ref.partition("/")
            src = self.by_id.get(src_id)
            if src is None:
                raise UnknownNodeError(f"unknown node {src_id!r}{did_you_mean(src_id, list(self.by_id))}",
                                       where=where)
            outs = src.cls.outputs
            if not outs:
                raise UnknownPadError(f"node {src_id!r} (kind {src.kind}) has no output pads, so nothing "
                                      "can be linked from it", where=where)
            if "/" in ref:
                if src_pad not in outs:
                    raise UnknownPadError(
                        f"node {src_id!r} (kind {src.kind}) has no output pad {src_pad!r}"
                        f"{did_you_mean(src_pad, list(outs))} (output pads: {', '.join(outs)})", where=where)
            else:
                src_pad = src.cls.default_output() or ""
            node.links.append((pad, port_key, src_id, src_pad))
            node.policies[pad] = policy
        linked_ports = {port_key for _, port_key, _, _ in node.links}
        for key, port in ports.items():
            if port.required and key not in linked_ports:
                example = key.replace("%s", "x").replace("%d", "0").replace("%u", "0")
                raise UnlinkedInputError(
                    f"required input pad {key!r} ({port.kind}) of kind {node.kind} is not linked; link it "
                    f"with `inputs: {{{example}: <node>}}`", where=base)
        # declared pad order (templates: file order), so output_formats() sees a stable order
        order = {key: pos for pos, key in enumerate(ports)}
        node.links.sort(key=lambda link: order[link[1]])

    # -- order and cycles
    def _order(self) -> list[_Node]:
        consumers: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        indegree = {n.id: 0 for n in self.nodes}
        for n in self.nodes:
            for src in {src for _, _, src, _ in n.links}:
                consumers[src].append(n.id)
                indegree[n.id] += 1
        heap = [(n.index, n.id) for n in self.nodes if indegree[n.id] == 0]
        heapq.heapify(heap)
        order: list[_Node] = []
        while heap:
            _, nid = heapq.heappop(heap)
            order.append(self.by_id[nid])
            for dst in consumers[nid]:
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    heapq.heappush(heap, (self.by_id[dst].index, dst))
        if len(order) < len(self.nodes):
            self._raise_cycle({nid for nid, deg in indegree.items() if deg > 0})
        return order

    def _raise_cycle(self, remaining: set[str]) -> None:
        # every remaining node has an upstream node that is also remaining: walk upstream to a repeat
        start = min(remaining, key=lambda nid: self.by_id[nid].index)
        path = [start]
        while True:
            node = self.by_id[path[-1]]
            up = next(src for _, _, src, _ in node.links if src in remaining)
            if up in path:
                cycle = path[path.index(up):]
                break
            path.append(up)
        cycle.reverse()  # data-flow direction: producer -> consumer
        first = min(range(len(cycle)), key=lambda k: self.by_id[cycle[k]].index)
        cycle = cycle[first:] + cycle[:first]
        head = self.by_id[cycle[0]]
        pad = next(p for p, _, src, _ in head.links if src == cycle[-1])
        text = " -> ".join([*cycle, cycle[0]])
        raise CycleError(f"cycle {text}; a node cannot consume its own output",
                         where=f"{head.where}.inputs.{pad}")

    # -- formats and the result
    def _assemble(self, name: str, supervisor: SupervisorSpec, order: list[_Node],
                  groups: tuple[GroupSpec, ...], group_of: dict[str, str]) -> Topology:
        out_formats: dict[str, dict[str, Format]] = {}
        in_formats: dict[str, dict[str, Format]] = {}
        edges_in: dict[str, dict[str, EdgeSpec]] = {}
        readers: dict[tuple[str, str], list[Reader]] = {}
        for node in order:
            for pad, port_key, src_id, src_pad in node.links:
                port = node.cls.inputs[port_key]
                readers.setdefault((src_id, src_pad), []).append(
                    Reader(node.id, node.kind, pad, f"{node.where}.inputs.{pad}", tuple(port.pix_fmts)))
        for node in order:
            fmts: dict[str, Format] = {}
            edges: dict[str, EdgeSpec] = {}
            for pad, port_key, src_id, src_pad in node.links:
                where = f"{node.where}.inputs.{pad}"
                fmt = out_formats[src_id].get(src_pad)
                if fmt is None:
                    raise FormatMismatchError(f"{src_id}/{src_pad} has no format (kind "
                                              f"{self.by_id[src_id].kind} did not declare one)", where=where)
                reason = node.cls.inputs[port_key].accepts(fmt)
                if reason is not None:
                    raise FormatMismatchError(
                        f"{src_id}/{src_pad} produces {fmt.describe()}, but input pad {pad!r} of kind "
                        f"{node.kind} {reason}", where=where)
                fmts[pad] = fmt
                edges[pad] = EdgeSpec(src_id, src_pad, node.id, pad, node.policies[pad], fmt)
            in_formats[node.id] = fmts
            edges_in[node.id] = edges
            out_formats[node.id] = self._negotiate(node, self._output_formats(node, fmts), readers)
        for node in order:  # a URL given in the file, by --set or overrides= hides its key like ${VAR} does
            self.secrets |= option_secrets(node.options_given)
        all_edges = tuple(e for node in order for e in edges_in[node.id].values())
        specs = []
        for node in order:
            outputs = {pad: tuple(e for e in all_edges if e.src == node.id and e.src_pad == pad)
                       for pad in node.cls.outputs}
            specs.append(NodeSpec(
                id=node.id, kind=node.kind, index=node.index, options=node.options,
                restart=node.restart, inputs=edges_in[node.id],
                outputs=outputs, input_formats=in_formats[node.id], output_formats=out_formats[node.id],
                group=group_of.get(node.id), is_source=bool(node.cls.is_source or not node.links)))
        return Topology(version=VERSION, name=name, nodes=tuple(specs), edges=all_edges, groups=groups,
                        supervisor=supervisor, secrets=frozenset(self.secrets), source=self.origin,
                        output_dir=self.output_dir)

    def _negotiate(self, node: _Node, formats: dict[str, Format],
                   readers: Mapping[tuple[str, str], list[Reader]]) -> dict[str, Format]:
        """Each video output's pixel format: the first the pad can emit that all its consumers accept
        (`topology.pixfmt`); a `pix_fmt` option other than `auto` forces it."""
        forced = getattr(node.options, "pix_fmt", "auto")
        forced = forced if isinstance(forced, str) else "auto"
        out = dict(formats)
        for pad, fmt in formats.items():
            if not isinstance(fmt, VideoFormat):
                continue
            src = f"{node.id}/{pad}"
            emits = emittable(node.cls.outputs[pad].pix_fmts, fmt.pix_fmt, forced, fmt.width, fmt.height,
                              src=src, where=f"{node.where}.options.pix_fmt")
            choice = choose_pix_fmt(src, emits, readers.get((node.id, pad), []),
                                    forced=bool(node.cls.outputs[pad].pix_fmts) and forced != "auto")
            if choice != fmt.pix_fmt:
                out[pad] = dataclasses.replace(fmt, pix_fmt=choice)
        return out

    def _output_formats(self, node: _Node, input_formats: dict[str, Format]) -> dict[str, Format]:
        cls = node.cls
        try:
            cls.validate(node.options, input_formats)  # the rules across options, once
            formats = dict(cls.output_formats(node.options, input_formats))
        except TopologyError as exc:
            if exc.where:
                raise
            raise type(exc)(exc.message, where=node.where) from exc
        except FrameSizeError as exc:  # a source declaring a huge picture: keep the code, name the node
            raise FrameSizeError(f"kind {node.kind}: {exc.message}", where=node.where) from exc
        except FormatError as exc:
            raise FormatMismatchError(f"kind {node.kind}: {exc.message}",
                                      where=f"{node.where}.inputs") from exc
        except ValueError as exc:
            raise OptionError(f"kind {node.kind}: {exc}", where=f"{node.where}.options") from exc
        except ResourceError as exc:  # e.g. a missing image file: keep its type, name the place
            if exc.where:
                raise
            raise type(exc)(f"kind {node.kind}: {exc.message}", where=f"{node.where}.options") from exc
        except NotImplementedError as exc:
            raise FormatMismatchError(f"kind {node.kind} does not declare its output formats: {exc}",
                                      where=node.where) from exc
        except EngineError as exc:
            raise FormatMismatchError(f"kind {node.kind}: {exc.message}", where=node.where) from exc
        for pad, port in cls.outputs.items():
            fmt = formats.get(pad)
            if fmt is None:
                raise FormatMismatchError(f"kind {node.kind} gave no format for output pad {pad!r}",
                                          where=node.where)
            if fmt.kind != port.kind:
                raise FormatMismatchError(f"kind {node.kind} declares output pad {pad!r} as {port.kind} but "
                                          f"computed {fmt.describe()}", where=node.where)
            if isinstance(fmt, VideoFormat):
                try:
                    check_frame_size(fmt.width, fmt.height, f"output {pad!r} of kind {node.kind}")
                except FrameSizeError as exc:
                    raise FrameSizeError(exc.message, where=node.where) from None
        return formats


# ---- entry point -------------------------------------------------------------------------------

def _check_version(data: Mapping[str, Any]) -> None:
    if "version" not in data:
        raise TopologyVersionError(f"missing `version: {VERSION}` at the top of the file", where="version")
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise TopologyVersionError(f"must be the integer {VERSION}, got {_show(version)}", where="version")
    if version != VERSION:
        raise TopologyVersionError(f"unsupported version {version}; this engine reads version {VERSION}",
                                   where="version")


def _redacted(err: TopologyError, secrets: set[str]) -> TopologyError | None:
    message = redact(err.message, secrets)
    where = redact(err.where, secrets) if err.where else err.where
    if message == err.message and where == err.where:
        return None
    return type(err)(message, where=where)


def _substitute_override(item: str, env: Mapping[str, str], secrets: set[str]) -> str:
    """`node.option=value` with `${VAR}` in the value replaced, so a key given as
    `--set 'push.url=${PUSH_URL}'` never appears on a command line (docs/security.md)."""
    target, sep, text = item.partition("=")
    if not sep:
        return item
    value, _ = subst_string(text, f"--set {target.strip()}", env, secrets)
    return f"{target}={value}"


def load_topology(source: str | os.PathLike[str] | Mapping[str, Any], *,
                  env: Mapping[str, str] | None = None, overrides: Sequence[str] = ()) -> Topology:
    """Read, substitute, check and order a topology; see the module docstring for the steps."""
    document, origin, default_name = read_source(source)
    if not isinstance(document, Mapping):
        raise TopologySyntaxError(f"the top level must be a mapping (version, nodes, ...), got "
                                  f"{_show(document)}")
    data = _mapping(document, "", "the top level", TopologySyntaxError)
    _check_version(data)
    secrets: set[str] = set()
    whole: set[str] = set()
    try:
        environ = os.environ if env is None else env
        substituted = substitute(data, "", environ, secrets, whole)
        given = [_substitute_override(str(item), environ, secrets) for item in overrides]
        return _Builder(substituted, origin, default_name, secrets, whole, given).build()
    except TopologyError as err:
        clean = _redacted(err, secrets)
        if clean is None:
            raise
        raise clean from None

