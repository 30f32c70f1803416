"""`mediaengine monitor`: a live view of a running engine, in the terminal or as JSON lines.

    mediaengine monitor                      # the only engine running (or --engine ID)
    mediaengine monitor --json --once        # one snapshot as JSON, then exit
    mediaengine monitor tcp://HOST:5555 --events tcp://HOST:5556 --curve-keys keys/

Attaching follows docs/protocol.md: SUB to the events endpoint (`events.` and `metrics.`), wait until
the connection is up, then fetch `snapshot` over control (nodes, metrics and the last 200 events), so
nothing published in between is missed; events seen in both are shown once.  Then every `--interval`
it asks `ps` (the authority on node state, pid and restarts) and folds in what arrived on the SUB
socket (metrics once a second per node, events as they happen).  Actor restarts are just events;
when the engine goes away the monitor says "engine ... is gone" and exits with status 1.

What it shows is modelled on OBS's stats dock (CPU, memory, fps, render time, dropped/skipped frames,
per output: status, dropped frames, data sent, bitrate): per node the state, pid, uptime, restarts,
fps in/out, frames dropped (count and %), input queue fill per edge, processing time per frame
(median/p95), CPU % and RSS; per output (`*_sender`, `recorder`) every figure its actor reports
(bitrate, unsent bytes, reconnects, ...); the recent events with their times.

The SUB side (`Subscriber`, `Replay`) is `mediaengine.control.events`, shared with the Python API.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from ..control.client import ControlClient, find_engine
from ..control.events import TOPICS, Replay, Subscriber, event_key
from ..sdk.errors import EngineError, ResourceError, TimeoutError_
from ..supervision.curve import connectable
from ..supervision.rundir import engine_alive
from .terminal import safe_text

EVENTS_SHOWN = 12  # recent events in the terminal view
OUTPUT_KINDS = ("recorder",)  # besides every `*_sender`: nodes shown in the outputs section
# the figures an output shows first (what OBS's stats dock shows per output), then whatever else it reports
OUTPUT_FIRST = ("state", "bitrate_kbps", "unsent_bytes", "queued_ms", "reconnects", "dropped", "bytes_sent",
                "recording", "path")



def _total(value: Any) -> float:
    if isinstance(value, Mapping):
        return float(sum(v for v in value.values() if isinstance(v, int | float)))
    return float(value) if isinstance(value, int | float) else 0.0


def is_output(kind: str) -> bool:
    return kind.endswith("_sender") or kind in OUTPUT_KINDS


def node_view(node: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of one node, flat, from a `ps`/`snapshot` node entry (its `metrics` included)."""
    m: Mapping[str, Any] = node.get("metrics") or {}
    queues = {}
    for pad, q in (m.get("queues") or {}).items():
        if isinstance(q, Mapping) and isinstance(q.get("depth"), int) and q["depth"] > 0:
            held = int(q.get("held") or 0)
            queues[pad] = {"held": held, "depth": q["depth"], "fill_pct": round(100.0 * held / q["depth"], 1)}
    running = node.get("state") == "running"
    return {
        "id": node.get("id"),
        "kind": node.get("kind"),
        "state": node.get("state"),
        "pid": node.get("pid"),
        "uptime_s": node.get("uptime_s", 0.0),
        "restarts": node.get("restarts", 0),
        "fps_in": round(_total(m.get("fps_in")), 2) if running else 0.0,
        "fps_out": round(_total(m.get("fps_out")), 2) if running else 0.0,
        "frames_in": int(_total(m.get("frames_in"))),
        "frames_out": int(_total(m.get("frames_out"))),
        "dropped": int(_total(m.get("drops"))),
        "drop_pct": float(m.get("drop_pct") or 0.0),
        "drops": dict(m.get("drops") or {}),
        "queues": queues,
        "proc_ms_median": float(m.get("proc_ms_median") or 0.0),
        "proc_ms_p95": float(m.get("proc_ms_p95") or 0.0),
        "cpu_pct": float(m.get("cpu_pct") or 0.0) if running else 0.0,
        "rss_bytes": int(m.get("rss_bytes") or 0) if running else 0,
        "paused": bool(m.get("paused", False)),
        "last_error": node.get("last_error"),
        "actor": dict(m["actor"]) if isinstance(m.get("actor"), Mapping) else {},
    }


class MonitorState:
    """Folds snapshots, `ps` results and PUB messages into one view; no I/O, no clock of its own."""

    def __init__(self, keep_events: int = 200) -> None:
        self.status: dict[str, Any] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.events: deque[dict[str, Any]] = deque(maxlen=keep_events)
        self.new_events: list[dict[str, Any]] = []
        self.replay = Replay()
        self.stopping_reason: str | None = None

    def apply_status(self, status: Mapping[str, Any]) -> None:
        """A `ps` or `snapshot` result: the authority on nodes (events_recent are replayed once)."""
        self.status = {k: v for k, v in status.items() if k not in ("nodes", "events_recent")}
        self.order = [str(n["id"]) for n in status.get("nodes", [])]
        self.nodes = {str(n["id"]): dict(n) for n in status.get("nodes", [])}
        if "events_recent" in status:
            for ev in self.replay.replayed(status["events_recent"], ("events.",)):
                self._add_event(ev, track=False)  # already reflected in the status

    def apply_pub(self, topic: str, payload: Mapping[str, Any]) -> None:
        """One PUB message: `metrics.<node>` replaces the node's metrics, `events.<node>` is recorded."""
        if topic.startswith("metrics."):
            node = self.nodes.get(topic[len("metrics."):])
            if node is not None:
                node["metrics"] = {k: v for k, v in payload.items() if k not in ("node", "t")}
        elif topic.startswith("events.") and not self.replay.is_duplicate(topic, payload):
            self.replay.seen.add(event_key(payload))
            self._add_event(dict(payload))

    def _add_event(self, ev: dict[str, Any], *, track: bool = True) -> None:
        self.events.append(ev)
        self.new_events.append(ev)
        node, name, data = ev.get("node"), ev.get("name"), ev.get("data") or {}
        if node == "engine" and name == "stopping":
            self.stopping_reason = str(data.get("reason", ""))
            if track:
                self.status["state"] = "stopping"
        st = self.nodes.get(str(node))
        if st is None or not track:
            return
        # keep the view current between two `ps` (which stays the authority)
        if name == "started":
            st.update(state="starting", pid=data.get("pid"), restarts=data.get("restarts", st.get("restarts")))
        elif name == "exited":
            st.update(state="exited", pid=None)
        elif name == "restarting":
            st.update(state="restarting", restarts=data.get("restarts", st.get("restarts")))

    def view(self, now: float, *, all_events: bool = False) -> dict[str, Any]:
        """What one update shows; `events` are those new since the previous view (or all kept)."""
        nodes = [node_view(self.nodes[n]) for n in self.order if n in self.nodes]
        events = list(self.events) if all_events else self.new_events
        self.new_events = []
        return {
            "t": now,
            "engine_id": self.status.get("engine_id"),
            "name": self.status.get("name"),
            "state": self.status.get("state"),
            "pid": self.status.get("pid"),
            "totals": {
                "nodes": len(nodes),
                "running": sum(1 for n in nodes if n["state"] == "running"),
                "restarts": sum(int(n["restarts"] or 0) for n in nodes),
                "cpu_pct": round(sum(n["cpu_pct"] for n in nodes), 1),
                "rss_bytes": sum(n["rss_bytes"] for n in nodes),
                "dropped": sum(n["dropped"] for n in nodes),
            },
            "nodes": nodes,
            "outputs": [{"id": n["id"], "kind": n["kind"], "state": n["state"], **n["actor"]}
                        for n in nodes if is_output(str(n["kind"]))],
            "events": [{"t": e.get("t"), "node": e.get("node"), "name": e.get("name"), "data": e.get("data")}
                       for e in events],
        }


# ---- text rendering ----------------------------------------------------------------------------------------

_COLORS = {"running": "32", "starting": "36", "restarting": "33", "stopping": "33", "exited": "31",
           "failed": "31", "stopped": "90", "done": "90"}


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def _dur(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _short(value: Any) -> str:
    """A figure or event field for the dashboard; text is escaped (it may come from the network)."""
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{safe_text(k)}: {_short(v)}" for k, v in value.items()) + "}"
    return safe_text(value)


def _clock(t: Any) -> str:
    if not isinstance(t, int | float):
        return "--:--:--.---"
    return time.strftime("%H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"


def render_text(view: Mapping[str, Any], *, color: bool = False, events: Sequence[Mapping[str, Any]] = (),
                width: int = 140) -> str:
    """The dashboard for one view, as plain text (ANSI colours when `color`); outputs wrap at `width`."""
    def paint(state: str, text: str) -> str:
        code = _COLORS.get(state)
        return f"\x1b[{code}m{text}\x1b[0m" if color and code else text

    tot = view["totals"]
    lines = [
        f"engine {view.get('engine_id')}  {view.get('name') or ''}  pid {view.get('pid')}  "
        + paint(str(view.get("state")), str(view.get("state")))
        + f"   nodes {tot['running']}/{tot['nodes']} running   restarts {tot['restarts']}   "
        f"CPU {tot['cpu_pct']:.1f}%   RSS {_mb(tot['rss_bytes'])} MB   dropped {tot['dropped']}",
        "",
        f"{'NODE':<10}{'KIND':<15}{'STATE':<11}{'PID':>7}{'UPTIME':>9}{'RESTARTS':>9}{'FPS IN':>8}{'FPS OUT':>8}"
        f"{'DROPPED':>13}{'PROC ms med/p95':>17}{'CPU%':>7}{'RSS MB':>8}  QUEUES",
    ]
    for n in view["nodes"]:
        state = str(n["state"]) + (" (paused)" if n.get("paused") else "")
        queues = " ".join(f"{pad} {q['held']}/{q['depth']}" for pad, q in n["queues"].items()) or "-"
        dropped = f"{n['dropped']} ({n['drop_pct']:.1f}%)"
        proc = f"{n['proc_ms_median']:.2f}/{n['proc_ms_p95']:.2f}"
        lines.append(
            f"{str(n['id'])[:9]:<10}{str(n['kind'])[:14]:<15}" + paint(str(n["state"]), f"{state[:10]:<11}")
            + f"{n['pid'] if n['pid'] is not None else '-':>7}{_dur(float(n['uptime_s'] or 0)):>9}"
            f"{n['restarts']:>9}{n['fps_in']:>8.1f}{n['fps_out']:>8.1f}{dropped:>13}{proc:>17}"
            f"{n['cpu_pct']:>7.1f}{_mb(n['rss_bytes']):>8}  {queues}")
        if n.get("last_error") and n["state"] != "running":
            lines.append(f"{'':<10}last error: {safe_text(n['last_error'])}")
    if view["outputs"]:
        lines += ["", "OUTPUTS"]
        for o in view["outputs"]:
            keys = [k for k in OUTPUT_FIRST if k in o] + [k for k in o if k not in OUTPUT_FIRST]
            figures = "  ".join(f"{k} {_short(o[k])}" for k in keys if k not in ("id", "kind"))
            head = f"{str(o['id'])[:9]:<10}{str(o['kind'])[:14]:<15}"
            lines += textwrap.wrap(figures, width=width, initial_indent=head, subsequent_indent=" " * len(head),
                                   break_long_words=False) or [head]
    lines += ["", "RECENT EVENTS"]
    for e in list(events)[-EVENTS_SHOWN:]:
        data = " ".join(f"{safe_text(k)}={_short(v)}" for k, v in (e.get("data") or {}).items())
        lines.append(f"{_clock(e.get('t'))}  {safe_text(e.get('node'))[:9]:<10}{safe_text(e.get('name')):<18}{data}")
    return "\n".join(lines)


# ---- the session ---------------------------------------------------------------------------------------

class EngineGone(EngineError):
    """The engine stopped or stopped answering (not an error code of its own: exit status 1)."""


class MonitorSession:
    """Attach to one engine and produce views; the CLI loop and tests drive it."""

    def __init__(self, control: str, events: str | None = None, *, engine_id: str | None = None,
                 info: Mapping[str, Any] | None = None, curve_keys: str | os.PathLike[str] | None = None,
                 timeout_s: float = 3.0, clock: Callable[[], float] = time.time) -> None:
        self.control = control
        self.events_endpoint = events
        self.engine_id = engine_id
        self.info = dict(info) if info is not None else None  # engine.json of a local engine
        self.curve_keys = curve_keys
        self.timeout_s = timeout_s
        self.clock = clock
        self.client = ControlClient(control, timeout_s=timeout_s, curve_keys=curve_keys)
        self.sub: Subscriber | None = None
        self.state = MonitorState()
        self.failures = 0

    def attach(self) -> dict[str, Any]:
        """SUB first, then the snapshot: returns the snapshot."""
        try:
            if self.events_endpoint is None:
                self.events_endpoint = self._events_from(self.client.request("ps"))
            self.sub = Subscriber(self.events_endpoint, TOPICS, curve_keys=self.curve_keys)
            self.sub.wait_connected(self.timeout_s)
            snap = dict(self.client.request("snapshot"))
        except TimeoutError_ as exc:
            self._check_gone()
            hint = "" if self.curve_keys else "; an engine exposed with CURVE needs --curve-keys DIR"
            raise TimeoutError_(f"{exc}{hint}") from None
        self.engine_id = self.engine_id or snap.get("engine_id")
        self.state.apply_status(snap)
        return snap

    def _events_from(self, status: Mapping[str, Any]) -> str:
        if self.control.startswith("tcp://"):
            public = status.get("events_public")
            if not public:
                raise ResourceError(f"the engine at {self.control} publishes events only locally; "
                                    "give --events ENDPOINT", where="monitor")
            host = self.control[len("tcp://"):].rsplit(":", 1)[0]
            return connectable(str(public), host)
        return str(status["events"])

    def _request(self, msg_type: str) -> dict[str, Any]:
        try:
            result = self.client.request(msg_type)
        except TimeoutError_:
            self._check_gone(timed_out=True)
            raise
        self.failures = 0
        return dict(result)

    def _gone(self, detail: str) -> EngineGone:
        reason = f" (it was stopping: {self.state.stopping_reason})" if self.state.stopping_reason else ""
        return EngineGone(f"engine {self.engine_id or self.control} is gone{reason}: {detail}")

    def _check_gone(self, *, timed_out: bool = False) -> None:
        if self.info is not None and not engine_alive(self.info):
            raise self._gone(f"its process {self.info.get('pid')} has exited")
        if timed_out:
            self.failures += 1
            if self.failures >= 2 or self.info is None:
                raise self._gone(f"no answer from {self.control} within {self.timeout_s:g}s")

    def poll(self, interval_s: float) -> dict[str, Any]:
        """Take PUB messages for `interval_s`, then refresh with `ps`; returns the next view."""
        assert self.sub is not None, "attach() first"
        deadline = time.monotonic() + interval_s
        while (left := deadline - time.monotonic()) > 0:
            msg = self.sub.recv(int(left * 1000) + 1)
            if msg is not None:
                self.state.apply_pub(*msg)
            self._check_gone()
        self._check_gone()
        try:
            self.state.apply_status(self._request("ps"))
        except TimeoutError_:
            pass  # not gone yet (a slow answer): show what the PUB socket told us
        return self.state.view(self.clock())

    def close(self) -> None:
        if self.sub is not None:
            self.sub.close()
        self.client.close()


def open_session(endpoint: str | None, *, engine_id: str | None, events: str | None,
                 curve_keys: str | os.PathLike[str] | None, wait_s: float = 0.0) -> MonitorSession:
    """A session on the engine named by endpoint, id, or the only one running (waiting up to `wait_s`)."""
    if endpoint:
        return MonitorSession(endpoint, events, engine_id=engine_id, curve_keys=curve_keys)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            info = find_engine(engine_id)
            break
        except ResourceError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
    keys = curve_keys if curve_keys is not None else info.get("curve_keys")
    return MonitorSession(str(info["control"]), events or str(info["events"]), engine_id=str(info["engine_id"]),
                          info=info, curve_keys=keys)


def _screen(text: str, *, first: bool) -> str:
    """Redraw in place: home, each line cleared to its end, then the rest of the screen (no flicker)."""
    return ("\x1b[2J" if first else "") + "\x1b[H" + text.replace("\n", "\x1b[K\n") + "\x1b[K\n\x1b[J"


def run_monitor(*, endpoint: str | None, engine_id: str | None, events: str | None,
                curve_keys: str | None, as_json: bool, once: bool, interval_s: float, count: int | None,
                wait_s: float, out: TextIO = sys.stdout) -> int:
    """The `monitor` subcommand; returns the exit status (1 with "engine ... is gone")."""
    session = open_session(endpoint, engine_id=engine_id, events=events, curve_keys=curve_keys, wait_s=wait_s)
    tty = out.isatty() and not as_json
    shown = 0
    try:
        session.attach()
        view = session.state.view(session.clock(), all_events=True)
        while True:
            if as_json:
                out.write(json.dumps(view, default=str) + "\n")
            else:
                text = render_text(view, color=tty, events=list(session.state.events),
                                   width=shutil.get_terminal_size((140, 40)).columns if tty else 140)
                out.write(_screen(text, first=shown == 0) if tty and not once else text + "\n\n")
            out.flush()
            shown += 1
            if once or (count is not None and shown >= count):
                return 0
            view = session.poll(interval_s)
    except EngineGone as exc:
        out.flush()
        print(f"mediaengine monitor: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        session.close()
