"""The `mediaengine` command line.

    mediaengine run FILE [--duration S] [--set node.option=value ...] [--allow-faults]
                         [--metrics-port N] [--control EP] [--events EP] [--curve-keys DIR]
                         [--insecure-loopback]
    mediaengine validate FILE [--set ...] [--json]
    mediaengine graph FILE -o out.svg|out.png|out.dot
    mediaengine ps [--json]
    mediaengine kinds [--json]
    mediaengine ctl [--engine ID] NODE COMMAND [word ...] [key=value ...] [--json]
    mediaengine schema [-o FILE]
    mediaengine play URL [--duration S] [--json] [--snapshot out.png]
    mediaengine monitor [ENDPOINT] [--engine ID] [--json] [--once] [--interval S]
    mediaengine fault [--engine ID] NODE kill|hang|crash|slow MS|exit CODE|corrupt
    mediaengine keys [-o DIR]

Errors print one line to stderr naming the place and the fix (never a traceback) and exit non-zero:
2 for bad input (usage, topology), 1 when a run fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..control.protocol import FAULTS
from ..sdk.errors import EngineError, TopologyError
from ..topology.topofile import parse_cli_value
from .argv import hide_in_argv, overrides_from_env


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="mediaengine %(asctime)s.%(msecs)03d %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from ..supervision.supervisor import Supervisor
    from ..topology.loader import load_topology

    topo = load_topology(args.file, overrides=overrides_from_env(args.set))
    hide_in_argv(topo.secrets)  # a key typed literally after --set leaves /proc/<pid>/cmdline (cli/argv.py)
    sup = Supervisor(topo, duration_s=args.duration, allow_faults=args.allow_faults,
                     # monitoring and remote control (docs/monitoring.md)
                     public_control=args.control, public_events=args.events, curve_keys=args.curve_keys,
                     insecure_loopback=args.insecure_loopback,
                     metrics_port=args.metrics_port, metrics_host=args.metrics_host,
                     # the supervisor's memory in `ps`, for tests and debugging (supervision/heap.py)
                     debug_memory=os.environ.get("MEDIAENGINE_DEBUG_MEMORY") == "1")
    code = sup.run()
    if sup.exit_error is not None:
        args.final_error = sup.exit_error
    return code


def write_result(path: str, status: int, error: EngineError | None) -> None:
    """The run's outcome as JSON for whoever started it (the Python API), so nobody parses the log.

    Written to a temporary name and renamed, so a reader sees all of it or nothing.
    """
    body = {"exit": status, "error": error.to_wire() if error is not None else None}
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(body, f)
    os.replace(tmp, path)


def cmd_validate(args: argparse.Namespace) -> int:
    from ..sdk.formats import format_to_wire
    from ..topology.loader import load_topology

    topo = load_topology(args.file, overrides=overrides_from_env(args.set))
    hide_in_argv(topo.secrets)
    edges = len(topo.edges)
    if getattr(args, "json", False):  # each edge with the format the loader chose (pixel format included)
        print(json.dumps({"file": args.file, "ok": True, "nodes": [{"id": n.id, "kind": n.kind} for n in topo.nodes],
                          "edges": [{"from": f"{e.src}/{e.src_pad}", "to": f"{e.dst}/{e.dst_pad}", "policy": e.policy,
                                     "format": format_to_wire(e.format), "describe": e.format.describe()}
                                    for e in topo.edges]}, indent=1))
        return 0
    print(f"{args.file}: ok ({len(topo.nodes)} nodes, {edges} links)")
    for e in topo.edges:
        print(f"  {e.src}/{e.src_pad} -> {e.dst}/{e.dst_pad}: {e.format.describe()} ({e.policy})")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    from ..topology.graph import render
    from ..topology.loader import load_topology

    topo = load_topology(args.file, overrides=args.set or ())
    out = Path(args.output)
    render(topo, out)
    print(f"wrote {out}")
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    from ..control.client import ControlClient
    from ..supervision.rundir import running_engines

    engines = []
    for info in running_engines():
        try:
            with ControlClient(str(info["control"]), timeout_s=2.0, curve_keys=info.get("curve_keys")) as c:
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
    from ..topology.registry import describe_kind, kind_names

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
    from ..control.client import ControlClient, find_engine

    info = find_engine(args.engine)
    kv: dict[str, Any] = {}
    positional: list[str] = []
    for item in args.args:
        if "=" not in item:
            if args.command == "set":
                raise EngineError(f"argument {item!r} must be key=value", where="ctl")
            positional.append(item)  # `ctl mix layer cam x=0.7`: bare words reach the command as `args`
            continue
        key, _, value = item.partition("=")
        try:
            kv[key] = parse_cli_value(value)
        except ValueError as exc:
            raise EngineError(str(exc), where=f"ctl {key}") from None
    if positional:
        kv["args"] = positional
    with ControlClient(str(info["control"]), curve_keys=info.get("curve_keys")) as c:
        if args.command == "set":
            result = c.request("set", node=args.node, options=kv)
        else:
            result = c.request("command", node=args.node, command=args.command, args=kv)
    if args.json:
        print(json.dumps({"ok": True, "result": result}, default=str))
    else:
        print(json.dumps(result, default=str) if result is not None else "ok")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from .monitor import run_monitor

    return run_monitor(endpoint=args.endpoint, engine_id=args.engine, events=args.events,
                       curve_keys=args.curve_keys, as_json=args.json, once=args.once, interval_s=args.interval,
                       count=args.count, wait_s=args.wait)


def cmd_fault(args: argparse.Namespace) -> int:
    from ..control.api import fault_args
    from ..control.client import ControlClient, find_engine

    fargs = fault_args(args.fault, args.value)
    info = find_engine(args.engine)
    with ControlClient(str(info["control"]), curve_keys=info.get("curve_keys")) as c:
        result = c.request("fault", node=args.node, fault=args.fault, args=fargs)
    print(json.dumps(result, default=str))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from ..supervision.curve import generate_keys

    paths = generate_keys(args.output, force=args.force)
    for what, path in paths.items():
        print(f"{what:<18} {path}")
    print(f"engine: --curve-keys {args.output} (uses server.key_secret and authorized_clients/)")
    print("client: copy server.key and client.key_secret to the monitoring side, --curve-keys DIR")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from ..topology.schema import topology_schema

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
    r.add_argument("--set", action="append", metavar="NODE.OPTION=VALUE",
                   help="override an option; '${VAR}' in VALUE reads the environment (keep keys off the command line)")
    r.add_argument("--allow-faults", action="store_true", help="accept fault-injection commands")
    r.add_argument("--result-file", default=None, metavar="PATH",
                   help="on exit, write the exit status and the final error (code, name, message) there as JSON")
    r.add_argument("--metrics-port", type=int, default=0, metavar="N",
                   help="serve Prometheus metrics at http://HOST:N/metrics (0 = off)")
    r.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="address of the metrics server (default loopback; it has no authentication)")
    r.add_argument("--control", default=None, metavar="ENDPOINT",
                   help="also bind control here, e.g. tcp://127.0.0.1:5555 (TCP needs --curve-keys)")
    r.add_argument("--events", default=None, metavar="ENDPOINT",
                   help="also publish events and metrics here (TCP needs --curve-keys)")
    r.add_argument("--curve-keys", default=None, metavar="DIR",
                   help="CURVE keys from `mediaengine keys`: only authorized clients get answers")
    r.add_argument("--insecure-loopback", action="store_true",
                   help="allow --control/--events on a loopback TCP address without keys (every local user "
                        "can then drive the engine; a warning is logged)")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check a topology file without running it")
    v.add_argument("file")
    v.add_argument("--set", action="append", metavar="NODE.OPTION=VALUE")
    v.add_argument("--json", action="store_true", help="the nodes and every edge with its chosen format, as JSON")
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
    c.add_argument("args", nargs="*", metavar="KEY=VALUE",
                   help="command arguments; bare words are passed in order as the list `args`")
    c.set_defaults(func=cmd_ctl)

    m = sub.add_parser("monitor", help="live view of a running engine (terminal or JSON lines)")
    m.add_argument("endpoint", nargs="?", default=None, help="control endpoint (default: the running engine)")
    m.add_argument("--engine", default=None, help="engine id (needed when several run)")
    m.add_argument("--events", default=None, metavar="ENDPOINT", help="events endpoint (default: asked)")
    m.add_argument("--curve-keys", default=None, metavar="DIR", help="client keys for a CURVE engine")
    m.add_argument("--json", action="store_true", help="one JSON object per update")
    m.add_argument("--once", action="store_true", help="one snapshot, then exit")
    m.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between updates")
    m.add_argument("--count", type=int, default=None, metavar="N", help="exit after N updates")
    m.add_argument("--wait", type=float, default=0.0, metavar="S", help="wait up to S seconds for an engine")
    m.set_defaults(func=cmd_monitor)

    f = sub.add_parser("fault", help="inject a fault (the engine must run with --allow-faults)")
    f.add_argument("--engine", default=None, help="engine id (needed when several run)")
    f.add_argument("node")
    f.add_argument("fault", choices=FAULTS)
    f.add_argument("value", nargs="?", default=None, help="MS for slow, CODE for exit")
    f.set_defaults(func=cmd_fault)

    ky = sub.add_parser("keys", help="generate CURVE keypairs for remote control and monitoring")
    ky.add_argument("-o", "--output", default="mediaengine-keys", metavar="DIR")
    ky.add_argument("--force", action="store_true", help="replace existing keys")
    ky.set_defaults(func=cmd_keys)

    sc = sub.add_parser("schema", help="print the JSON schema of topology files")
    sc.add_argument("-o", "--output", default=None)
    sc.set_defaults(func=cmd_schema)

    from .play import add_play_parser  # `play URL`: pull a stream and report on it (engine/player.py)

    add_play_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    error: EngineError | None = None
    try:
        status = int(args.func(args))
        error = getattr(args, "final_error", None)
    except TopologyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"  (error {exc.code} {exc.name})", file=sys.stderr)
        status, error = 2, exc
    except EngineError as exc:
        print(f"error: {exc} (error {exc.code} {exc.name})", file=sys.stderr)
        status, error = 1, exc
    except KeyboardInterrupt:
        status = 130
    if getattr(args, "result_file", None):
        write_result(args.result_file, status, error)
    return status


def entry() -> None:
    """The `mediaengine` command: `main()`, then exit.

    A pull thread (`mediaengine play`) can still be inside FFmpeg when the command is done: an open
    or a read on a silent server only ends at its timeout, and FFmpeg cannot be interrupted from
    outside.  Finalising the interpreter under a daemon thread that runs native code crashes
    (SIGSEGV, measured on a loaded machine: `play` of an unpublished stream with `--duration` shorter
    than `--timeout`), so then the process ends at once, its output flushed, with main()'s status."""
    status = main()
    pull = sys.modules.get("mediaengine.sdk.pull")  # imported only by the commands that pull
    if pull is not None and pull.pull_threads_alive():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    entry()
