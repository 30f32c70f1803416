"""The `mediaengine` command line.

    mediaengine run FILE [--duration S] [--set node.option=value ...] [--allow-faults]
    mediaengine validate FILE [--set ...]
    mediaengine graph FILE -o out.svg|out.png|out.dot
    mediaengine ps [--json]
    mediaengine kinds [--json]
    mediaengine ctl [--engine ID] NODE COMMAND [key=value ...] [--json]
    mediaengine schema [-o FILE]

Errors print one line to stderr naming the place and the fix (never a traceback) and exit non-zero:
2 for bad input (usage, topology), 1 when a run fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ._errors import EngineError, TopologyError


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="mediaengine %(asctime)s.%(msecs)03d %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def cmd_run(args: argparse.Namespace) -> int:
    from ._supervisor import Supervisor
    from ._topology import load_topology

    topo = load_topology(args.file, overrides=args.set or ())
    sup = Supervisor(topo, duration_s=args.duration, allow_faults=args.allow_faults)
    return sup.run()


def cmd_validate(args: argparse.Namespace) -> int:
    from ._topology import load_topology

    topo = load_topology(args.file, overrides=args.set or ())
    edges = len(topo.edges)
    print(f"{args.file}: ok ({len(topo.nodes)} nodes, {edges} links)")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from ._graph import render
    from ._topology import load_topology

    topo = load_topology(args.file, overrides=args.set or ())
    out = Path(args.output)
    render(topo, out)
    print(f"wrote {out}")
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    from ._client import ControlClient
    from ._rundir import running_engines

    engines = []
    for info in running_engines():
        try:
            with ControlClient(str(info["control"]), timeout_s=2.0) as c:
                status = c.request("ps")
        except EngineError as exc:
            status = {"engine_id": info.get("engine_id"), "error": str(exc), "nodes": []}
        status.setdefault("control", info.get("control"))
        status.setdefault("events", info.get("events"))
        engines.append(status)
    if args.json:
        for e in engines:
            for n in e.get("nodes", []):
                n.pop("metrics", None)
        print(json.dumps({"engines": engines}, indent=1))
        return 0
    if not engines:
        print("no engine is running")
        return 0
    for e in engines:
        print(f"engine {e.get('engine_id')}  {e.get('name', '')}  pid={e.get('pid', '?')}  {e.get('state', '')}")
        if e.get("error"):
            print(f"  (not answering: {e['error']})")
        print(f"  {'NODE':<14}{'KIND':<16}{'PID':>8}  {'STATE':<11}{'RESTARTS':>8}{'FPS':>8}")
        for n in e.get("nodes", []):
            pid = n["pid"] if n["pid"] is not None else "-"
            print(f"  {n['id']:<14}{n['kind']:<16}{pid:>8}  {n['state']:<11}{n['restarts']:>8}{n['fps']:>8.1f}")
    return 0


def cmd_kinds(args: argparse.Namespace) -> int:
    from ._registry import describe_kind, kind_names

    kinds = {name: describe_kind(name) for name in kind_names()}
    if args.json:
        print(json.dumps(kinds, indent=1, default=str))
        return 0
    for name, d in kinds.items():
        print(name)
        for key in ("inputs", "outputs"):
            for pad, info in (d.get(key) or {}).items():
                print(f"  {key[:-1]:<6} {pad}: {json.dumps(info, default=str)}")
        for opt in d.get("options", []):
            if isinstance(opt, dict):
                flags = " (live)" if opt.get("live") else ""
                default = "required" if opt.get("required") else f"default {opt.get('default')!r}"
                print(f"  option {opt.get('name')}: {opt.get('type')}, {default}{flags}")
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    from ._client import ControlClient, find_engine

    info = find_engine(args.engine)
    kv: dict[str, Any] = {}
    for item in args.args:
        if "=" not in item:
            raise EngineError(f"argument {item!r} must be key=value", where="ctl")
        key, _, value = item.partition("=")
        kv[key] = _parse_value(value)
    with ControlClient(str(info["control"])) as c:
        if args.command == "set":
            result = c.request("set", node=args.node, options=kv)
        else:
            result = c.request("command", node=args.node, command=args.command, args=kv)
    if args.json:
        print(json.dumps({"ok": True, "result": result}, default=str))
    else:
        print(json.dumps(result, default=str) if result is not None else "ok")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from ._schema import topology_schema

    text = json.dumps(topology_schema(), indent=1)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mediaengine", description="Run and drive live-streaming topologies.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a topology file")
    r.add_argument("file")
    r.add_argument("--duration", type=float, default=None, help="stop after S seconds of running")
    r.add_argument("--set", action="append", metavar="NODE.OPTION=VALUE", help="override an option")
    r.add_argument("--allow-faults", action="store_true", help="accept fault-injection commands")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check a topology file without running it")
    v.add_argument("file")
    v.add_argument("--set", action="append", metavar="NODE.OPTION=VALUE")
    v.set_defaults(func=cmd_validate)

    g = sub.add_parser("graph", help="draw a topology's graph")
    g.add_argument("file")
    g.add_argument("-o", "--output", required=True, help="out.svg, out.png or out.dot")
    g.add_argument("--set", action="append", metavar="NODE.OPTION=VALUE")
    g.set_defaults(func=cmd_graph)

    s = sub.add_parser("ps", help="list running engines and their nodes")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_ps)

    k = sub.add_parser("kinds", help="list actor kinds with their ports and options")
    k.add_argument("--json", action="store_true")
    k.set_defaults(func=cmd_kinds)

    c = sub.add_parser("ctl", help="send a control command to a node of a running engine")
    c.add_argument("--engine", default=None, help="engine id (needed when several run)")
    c.add_argument("--json", action="store_true")
    c.add_argument("node")
    c.add_argument("command", help="a command of the node, or `set` to change live options")
    c.add_argument("args", nargs="*", metavar="KEY=VALUE")
    c.set_defaults(func=cmd_ctl)

    sc = sub.add_parser("schema", help="print the JSON schema of topology files")
    sc.add_argument("-o", "--output", default=None)
    sc.set_defaults(func=cmd_schema)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except TopologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"  (error {exc.code} {exc.name})", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"error: {exc} (error {exc.code} {exc.name})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
