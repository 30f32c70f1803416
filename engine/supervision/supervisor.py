"""The supervisor: starts the actors of a topology, watches them, restarts the ones that fail.

One process, one loop, no threads: a ZeroMQ poller over the control ROUTER socket, every actor's
process sentinel (death is noticed at once) and a signal wake-up pipe.  (Two optional helper threads
work on the side without touching the loop's state: the Prometheus server of `--metrics-port` and the
CURVE ZAP handler of `--curve-keys`; see docs/monitoring.md.)  Hangs are noticed from missed
heartbeats.  Restart decisions come from `_policy` (OTP vocabulary); rings are created here, before
any actor starts, so a crashed actor never takes a ring with it, and unlinked at the end.

Shutdown is orderly: sources are told to stop first; each actor ends when its inputs end (end of
stream travels down the graph, encoders flush, files are finalised); nodes whose upstream is gone are
told to stop too; after `shutdown_timeout_s` what is left is terminated, then killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from ..control import protocol as proto
from ..runtime.ring import FrameRing, segment_name
from ..sdk.errors import (
    EngineError,
    FieldError,
    IntensityExceededError,
    MalformedMessageError,
    NotAllowedError,
    ResourceError,
    TimeoutError_,
    UnknownTargetError,
)
from ..sdk.formats import format_to_wire
from ..sdk.redact import redact_value
from ..topology.loader import NodeSpec, Topology
from .curve import CurveServer, check_exposure
from .policy import Backoff, IntensityTracker, StabilityTracker, affected_members, should_restart
from .prometheus import MetricsServer
from .rundir import ENGINE_MARKER, RunDir, process_start_time, reap_stale

log = logging.getLogger("mediaengine")

NS = 1_000_000_000
STARTUP_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 5.0
PRELOAD = ["mediaengine.runtime.preload"]
GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=268435456"


@dataclass
class NodeState:
    spec: NodeSpec
    stability: StabilityTracker
    proc: Any = None
    pid: int = 0
    state: str = "new"  # starting | running | restarting | stopped | done | failed
    restarts: int = 0
    last_hb_ns: int = 0
    started_ns: int = 0
    restart_due_ns: int | None = None
    told_shutdown: bool = False
    restart_after_exit: bool = False
    killed_for_hang: bool = False
    done_reason: str | None = None
    last_error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.proc is not None


@dataclass
class _Pending:
    client: bytes
    client_id: int
    deadline_ns: int


class Supervisor:
    """Run one topology until it ends, is stopped, or gives up.  `run()` returns the exit status."""

    def __init__(self, topology: Topology, *, duration_s: float | None = None, allow_faults: bool = False,
                 control_endpoint: str | None = None, events_endpoint: str | None = None,
                 public_control: str | None = None, public_events: str | None = None,
                 curve_keys: str | os.PathLike[str] | None = None,
                 metrics_port: int = 0, metrics_host: str = "127.0.0.1") -> None:
        # Exposure beyond loopback needs CURVE keys: refused here, before anything is created or bound.
        # public_control/public_events are extra binds (e.g. tcp://0.0.0.0:5555) of the same sockets; the
        # actors and local tools keep using the ipc endpoints.  See engine/_curve.py, docs/monitoring.md.
        check_exposure((control_endpoint, events_endpoint, public_control, public_events), curve_keys)
        self.curve = CurveServer.load(curve_keys) if curve_keys is not None else None
        self.public_control = public_control
        self.public_events = public_events
        self.metrics_port = metrics_port  # Prometheus /metrics on an HTTP thread; 0 = off (engine/_prometheus.py)
        self.metrics_host = metrics_host
        self.metrics_server: MetricsServer | None = None
        self.metrics_refresh_ns = 0
        self.topo = topology
        self.duration_s = duration_s
        self.allow_faults = allow_faults
        self.sup = topology.supervisor
        self.reaped = reap_stale()  # before our own directory exists
        self.rundir = RunDir.create()
        self.engine_id = self.rundir.engine_id
        self.control_endpoint = control_endpoint or self.rundir.endpoint("control.sock")
        self.events_endpoint = events_endpoint or self.rundir.endpoint("events.sock")
        self.epoch_ns = time.monotonic_ns()
        self.nodes: dict[str, NodeState] = {
            n.id: NodeState(n, StabilityTracker(self.sup.stable_s)) for n in topology.nodes
        }
        self.order = [n.id for n in topology.nodes]  # topological: sources first
        self.engine_intensity = IntensityTracker(self.sup.intensity, self.sup.period_s)
        self.group_intensity = {g.name: IntensityTracker(g.intensity, g.period_s) for g in topology.groups}
        self.groups = {g.name: g for g in topology.groups}
        self.backoff = Backoff(self.sup.backoff_initial_s, self.sup.backoff_max_s)
        self.rings: list[FrameRing] = []
        self.ring_names: dict[tuple[str, str], str] = {}
        self.pending: dict[int, _Pending] = {}
        self.next_rid = 1
        self.events: deque[dict[str, Any]] = deque(maxlen=200)
        self.stopping = False
        self.stop_deadline_ns = 0
        self.terminated = False
        self.exit_code = 0
        self.exit_error: EngineError | None = None
        self.run_started_ns: int | None = None
        self.signals: list[int] = []
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.pub = self.ctx.socket(zmq.PUB)
        self.mp_ctx: Any = None

    # ---- helpers --------------------------------------------------------------------------------
    def now_ns(self) -> int:
        return time.monotonic_ns() - self.epoch_ns

    def _say(self, level: int, text: str) -> None:
        log.log(level, self.topo.redact(text))

    def _clean(self, value: Any) -> Any:
        """`value` with every URL and every secret of the topology redacted (docs/security.md, Secrets).

        Applied to whatever an actor sends (errors, events, metrics) as it arrives and to every event
        the supervisor makes, so `last_error`, `events_recent`, the PUB socket, Prometheus and monitors
        only ever see redacted text, whatever an actor forgot to redact."""
        return redact_value(value, self.topo.secrets)

    def _publish(self, topic: str, payload: dict[str, Any]) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.pub.send_multipart([topic.encode(), msgpack.packb(payload, use_bin_type=True)], zmq.NOBLOCK)

    def _event(self, node: str, name: str, data: dict[str, Any] | None = None) -> None:
        ev = {"v": proto.VERSION, "type": "event", "node": node, "name": name, "data": self._clean(data or {}),
              "t": time.time()}
        self.events.append(ev)
        self._publish(f"events.{node}", ev)

    # ---- setup --------------------------------------------------------------------------------
    def _bind(self) -> None:
        for sock in (self.router, self.pub):
            sock.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, proto.MAX_MESSAGE_BYTES)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # A restarted actor reconnects with its predecessor's identity (a:<node>) within milliseconds,
        # possibly before the dead connection is torn down: the new connection must take the identity
        # over, or ROUTER would ignore the newcomer and the restart would look hung.
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.pub.setsockopt(zmq.SNDHWM, 10000)
        if self.curve is not None:  # CURVE servers, keys checked by a ZAP thread (engine/_curve.py)
            self.curve.start(self.ctx)
            for sock in (self.router, self.pub):
                self.curve.make_server(sock)
        binds = [(self.router, self.control_endpoint), (self.pub, self.events_endpoint)]
        binds += [(sock, ep) for sock, ep in ((self.router, self.public_control), (self.pub, self.public_events))
                  if ep]
        for sock, endpoint in binds:
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise ResourceError(f"cannot bind {endpoint}: {exc}; is another engine using it?") from None
        if self.metrics_port:
            self.metrics_server = MetricsServer(self.metrics_host, self.metrics_port)
            self.metrics_server.update(self.status())
            self.metrics_server.start()

    def _create_rings(self) -> None:
        for node in self.topo.nodes:
            for pad, edges in node.outputs.items():
                fmt = node.output_formats[pad]
                if fmt.kind == "encoded":
                    continue
                name = segment_name(self.engine_id, node.id, pad)
                depth = 4 if fmt.kind == "video" else 16
                ring = FrameRing.create(name, slot_bytes=fmt.frame_bytes, consumers=len(edges), depth=depth,  # type: ignore[union-attr]
                                        format_info=msgpack.packb(format_to_wire(fmt)))
                self.rings.append(ring)
                self.ring_names[(node.id, pad)] = name

    def _data_endpoint(self, node_id: str) -> str:
        return self.rundir.endpoint(f"data-{node_id}.sock")

    def _spec(self, st: NodeState) -> dict[str, Any]:
        n = st.spec
        outputs = {}
        for pad, edges in n.outputs.items():
            outputs[pad] = {
                "format": format_to_wire(n.output_formats[pad]),
                "ring": self.ring_names.get((n.id, pad)),
                "consumers": [
                    {"node": e.dst, "pad": e.dst_pad, "index": i, "policy": e.policy,
                     "endpoint": self._data_endpoint(e.dst)}
                    for i, e in enumerate(edges)
                ],
            }
        inputs = {}
        for pad, e in n.inputs.items():
            src = self.topo.node(e.src)
            index = list(src.outputs[e.src_pad]).index(e)
            inputs[pad] = {"format": format_to_wire(e.format), "ring": self.ring_names.get((e.src, e.src_pad)),
                           "index": index, "policy": e.policy}
        return {
            "engine_id": self.engine_id,
            "node": n.id,
            "kind": n.kind,
            "options": n.raw_options,
            "control": self.control_endpoint,
            "data_endpoint": self._data_endpoint(n.id),
            "epoch_ns": self.epoch_ns,
            "heartbeat_interval_s": self.sup.heartbeat_interval_s,
            "inputs": inputs,
            "outputs": outputs,
            "restart_count": st.restarts,
            "allow_faults": self.allow_faults,
            "output_dir": self.topo.output_dir,  # where commands may write files (sdk/outputs.py)
            "supervisor_pid": os.getpid(),
            "curve": self.curve.actor_keys() if self.curve is not None else None,  # this run's actor keypair
        }

    def _mp(self) -> Any:
        if self.mp_ctx is None:
            import multiprocess

            # Per-frame temporaries of 1-3 MB would otherwise be mmapped and unmapped by glibc on every
            # frame (thousands of page faults, +2-3 ms); the fork server and so every actor inherit this.
            os.environ.setdefault("GLIBC_TUNABLES", GLIBC_TUNABLES)
            # Every actor carries its engine's id in its environment: the only proof `reap_stale`
            # accepts before it kills a pid named in a dead engine's engine.json (rundir.py).
            os.environ[ENGINE_MARKER] = self.engine_id

            ctx = multiprocess.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            self.mp_ctx = ctx
        return self.mp_ctx

    def _start(self, st: NodeState) -> None:
        from ..runtime.actor_runtime import actor_main

        proc = self._mp().Process(target=actor_main, args=(self._spec(st),), name=f"me-{st.spec.id}",
                                  daemon=False)
        proc.start()
        st.proc, st.pid = proc, int(proc.pid)
        st.state = "starting"
        st.told_shutdown = False
        st.killed_for_hang = False
        st.done_reason = None
        st.restart_due_ns = None
        now = self.now_ns()
        st.started_ns = now
        st.last_hb_ns = now
        st.stability.started(now)
        self._say(logging.INFO, f"node {st.spec.id} started pid={st.pid}")
        self._event(st.spec.id, "started", {"pid": st.pid, "restarts": st.restarts})
        self._write_info()

    def _write_info(self) -> None:
        actors = {nid: {"pid": st.pid, "pid_start": process_start_time(st.pid)}
                  for nid, st in self.nodes.items() if st.alive}
        self.rundir.write_info({
            "engine_id": self.engine_id,
            "pid": os.getpid(),
            "pid_start": process_start_time(os.getpid()),
            "started_at": time.time(),
            "name": self.topo.name,
            "topology": self.topo.source,
            "control": self.control_endpoint,
            "events": self.events_endpoint,
            "actors": actors,
            # optional: extra (tcp) binds, the CURVE keys directory local tools use, the Prometheus URL
            "control_public": self.public_control,
            "events_public": self.public_events,
            "curve_keys": str(self.curve.keys_dir.resolve()) if self.curve is not None else None,
            "metrics": self.metrics_server.url if self.metrics_server is not None else None,
        })

    # ---- run ----------------------------------------------------------------------------------
    def run(self) -> int:
        for rid in self.reaped:
            self._say(logging.INFO, f"removed what a dead engine {rid} left behind")
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._bind()
            self._create_rings()
            self._write_info()
            self._say(logging.INFO, f"engine {self.engine_id} running {self.topo.name!r}; "
                                    f"control {self.control_endpoint}")
            for nid in reversed(self.order):  # sinks first, so sources find their consumers ready
                self._start(self.nodes[nid])
            self._loop(wake_r)
        except EngineError as exc:
            self._fail(exc)
        finally:
            self._kill_all()
            signal.set_wakeup_fd(old_wakeup)
            for s, h in old_handlers.items():
                signal.signal(s, h)
            wake_r.close()
            wake_w.close()
            self._cleanup()
        if self.exit_error is not None:
            self._say(logging.ERROR, f"engine stopped: {self.exit_error} (error {self.exit_error.code})")
        return self.exit_code

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _fail(self, exc: EngineError) -> None:
        if self.exit_error is None:
            self.exit_error = exc
        self.exit_code = 1
        self._begin_shutdown(str(exc))

    def _loop(self, wake_r: socket.socket) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(wake_r, zmq.POLLIN)
        registered: dict[int, str] = {}
        while True:
            # keep the poller's sentinel set in step with the live processes
            live = {st.proc.sentinel: nid for nid, st in self.nodes.items() if st.alive}
            for fd in set(registered) - set(live):
                poller.unregister(fd)
            for fd in set(live) - set(registered):
                poller.register(fd, zmq.POLLIN)
            registered = live
            if not live and (self.stopping or self._all_ended()):
                return
            events = dict(poller.poll(20))
            if wake_r in events or wake_r.fileno() in events:
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(64)
            self._handle_signals()
            if self.router in events:
                self._handle_router()
            for fd, nid in registered.items():
                if fd in events:
                    self._handle_exit(self.nodes[nid])
            self._timers()
            self._export_metrics()

    def _export_metrics(self) -> None:
        """Hand the Prometheus thread a fresh status dict twice a second (a reference swap, no lock)."""
        if self.metrics_server is not None and self.now_ns() >= self.metrics_refresh_ns:
            self.metrics_server.update(self.status())
            self.metrics_refresh_ns = self.now_ns() + NS // 2

    def _all_ended(self) -> bool:
        return all(st.state in ("done", "stopped", "failed") for st in self.nodes.values())

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            name = signal.Signals(signum).name
            if self.stopping:
                self._say(logging.WARNING, f"{name} again: killing every actor now")
                self._kill_all()
            else:
                self._say(logging.INFO, f"{name}: stopping (sources first, then drain)")
                self._begin_shutdown(f"{name}")

    # ---- timers: heartbeats, restarts, duration, shutdown ----------------------------------------
    def _timers(self) -> None:
        now = self.now_ns()
        hb_timeout = int(self.sup.heartbeat_timeout_s * NS)
        for st in self.nodes.values():
            if st.alive and not st.killed_for_hang:
                limit = hb_timeout if st.state == "running" else int(STARTUP_TIMEOUT_S * NS)
                if now - st.last_hb_ns > limit:
                    self._say(logging.WARNING,
                              f"node {st.spec.id} missed heartbeats for {(now - st.last_hb_ns) / NS:.1f}s "
                              f"(pid={st.pid}); replacing it")
                    self._event(st.spec.id, "hang_detected", {"pid": st.pid})
                    st.killed_for_hang = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(st.pid, signal.SIGKILL)
            if st.state == "restarting" and st.restart_due_ns is not None and now >= st.restart_due_ns:
                if self.stopping:
                    st.state = "stopped"
                else:
                    self._start(st)
        if (self.duration_s is not None and self.run_started_ns is not None and not self.stopping
                and now - self.run_started_ns >= int(self.duration_s * NS)):
            self._say(logging.INFO, f"duration of {self.duration_s:g}s reached: stopping")
            self._begin_shutdown("duration reached")
        for rid, pend in list(self.pending.items()):
            if now > pend.deadline_ns:
                del self.pending[rid]
                self._reply_error(pend.client, pend.client_id, TimeoutError_("the node did not answer in time"))
        if self.stopping:
            self._shutdown_step(now)

    def _begin_shutdown(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline_ns = self.now_ns() + int(self.sup.shutdown_timeout_s * NS)
        self._event("engine", "stopping", {"reason": reason})
        for st in self.nodes.values():
            if st.state == "restarting":
                st.state = "stopped"
        self._shutdown_step(self.now_ns())

    def _shutdown_step(self, now: int) -> None:
        for nid in self.order:
            st = self.nodes[nid]
            if not st.alive or st.told_shutdown:
                continue
            upstream_alive = any(self.nodes[e.src].alive for e in st.spec.inputs.values())
            if st.spec.is_source or not upstream_alive:
                self._send_actor(nid, proto.encode("shutdown"))
                st.told_shutdown = True
        if now > self.stop_deadline_ns and not self.terminated:
            left = [nid for nid, st in self.nodes.items() if st.alive]
            self._say(logging.WARNING, f"shutdown timeout: terminating {', '.join(left)}")
            self.terminated = True
            for nid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.nodes[nid].pid, signal.SIGTERM)
        if self.terminated and now > self.stop_deadline_ns + 2 * NS:
            self._kill_all()

    # ---- exits and restarts ---------------------------------------------------------------------
    def _handle_exit(self, st: NodeState) -> None:
        proc = st.proc
        proc.join(1.0)
        code = proc.exitcode
        st.proc = None
        nid = st.spec.id
        if code is None:
            code = -9
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
        if st.killed_for_hang:
            how += " (hung)"
        normal = code == 0 and st.done_reason is not None
        self._event(nid, "exited", {"pid": st.pid, "exit": code, "normal": normal, "error": st.last_error})
        self._write_info()
        if self.stopping:
            st.state = "stopped" if normal or code == 0 else "failed"
            self._say(logging.INFO if code == 0 else logging.WARNING, f"node {nid} exited ({how})")
            return
        if st.restart_after_exit:
            st.restart_after_exit = False
            self._schedule_restart(st, 0)
            return
        if normal:
            st.state = "done"
            self._say(logging.INFO, f"node {nid} finished: {st.done_reason}")
            return
        detail = f": {st.last_error}" if st.last_error else ""
        self._say(logging.WARNING, f"node {nid} died ({how}){detail}")
        abnormal = code != 0 or st.killed_for_hang
        if not should_restart(st.spec.restart, abnormal):
            st.state = "stopped"
            self._say(logging.INFO, f"node {nid} is {st.spec.restart}: not restarted")
            return
        now = self.now_ns()
        group = self.groups.get(st.spec.group) if st.spec.group else None
        if self.engine_intensity.record(now):
            self._fail(IntensityExceededError(
                f"more than {self.sup.intensity} restarts within {self.sup.period_s:g}s "
                f"(last: node {nid} {how}{detail}); giving up"))
            return
        if group is not None and self.group_intensity[group.name].record(now):
            self._fail(IntensityExceededError(
                f"group {group.name!r}: more than {group.intensity} restarts within {group.period_s:g}s "
                f"(last: node {nid} {how}{detail}); giving up"))
            return
        failures = st.stability.failed()
        delay = self.backoff.delay_ns(failures)
        members = [m for m in self.order if group is not None and m in group.members]
        targets = affected_members(group.strategy, members, nid) if group is not None else [nid]
        for other in targets:
            ost = self.nodes[other]
            if other == nid:
                continue
            if ost.alive:
                ost.restart_after_exit = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ost.pid, signal.SIGKILL)
        self._schedule_restart(st, delay)

    def _schedule_restart(self, st: NodeState, delay_ns: int) -> None:
        st.state = "restarting"
        st.restarts += 1
        st.restart_due_ns = self.now_ns() + delay_ns
        self._event(st.spec.id, "restarting", {"restarts": st.restarts, "delay_s": delay_ns / NS})
        if delay_ns > 0:
            self._say(logging.INFO, f"node {st.spec.id}: restart {st.restarts} in {delay_ns / NS:.2f}s")

    def _kill_all(self) -> None:
        for st in self.nodes.values():
            if st.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(st.pid, signal.SIGKILL)
                st.proc.join(5.0)
                st.proc = None
                if st.state not in ("done", "failed"):
                    st.state = "stopped"

    def _cleanup(self) -> None:
        for ring in self.rings:
            with contextlib.suppress(Exception):
                ring.unlink()
            with contextlib.suppress(Exception):
                ring.close()
        if self.mp_ctx is not None:
            # stop the fork server now rather than when it notices our exit
            from multiprocess import forkserver

            with contextlib.suppress(Exception):
                forkserver._forkserver._stop()
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.router.close(0)
        self.pub.close(0)
        if self.curve is not None:
            self.curve.stop()  # the ZAP thread holds a socket of self.ctx
        self.ctx.term()
        self.rundir.remove()

    # ---- control plane ----------------------------------------------------------------------------
    def _send_actor(self, node: str, raw: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.router.send_multipart([f"a:{node}".encode(), raw], zmq.NOBLOCK)

    def _reply(self, client: bytes, raw: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.router.send_multipart([client, raw], zmq.NOBLOCK)

    def _reply_error(self, client: bytes, rid: int, err: EngineError) -> None:
        self._reply(client, proto.error(rid, err))

    def _handle_router(self) -> None:
        for _ in range(1000):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                if frames:
                    self._reply_error(frames[0], 0, MalformedMessageError(
                        "send exactly one frame per message (a msgpack map) from a DEALER socket"))
                continue
            ident, raw = frames
            try:
                msg = proto.decode(raw)
            except EngineError as exc:
                self._reply_error(ident, proto.request_id(raw), exc)
                continue
            if ident.startswith(b"a:"):
                self._from_actor(ident[2:].decode(errors="replace"), msg)
            else:
                self._from_client(ident, msg)

    def _from_actor(self, nid: str, msg: dict[str, Any]) -> None:
        st = self.nodes.get(nid)
        if st is None:
            return
        mtype = msg["type"]
        now = self.now_ns()
        st.last_hb_ns = now
        if st.stability.heartbeat(now) and st.restarts:
            self._event(nid, "restart_stable", {"restarts": st.restarts})
        if mtype in ("hello", "heartbeat") and st.state == "starting":
            st.state = "running"  # a heartbeat also proves the actor is up, should its hello be lost
        if mtype == "hello":
            if self.run_started_ns is None and all(s.state == "running" for s in self.nodes.values()):
                self.run_started_ns = now
                self._event("engine", "running", {})
        elif mtype == "metrics":
            st.metrics = self._clean(msg["metrics"])
            self._publish(f"metrics.{nid}", {"node": nid, "t": time.time(), **st.metrics})
        elif mtype == "event":
            self._event(nid, msg["name"], msg["data"])
        elif mtype == "failed":
            st.last_error = self._clean(msg["message"])
            self._event(nid, "error", {"code": msg["code"], "message": st.last_error})
        elif mtype == "done":
            st.done_reason = self._clean(msg["reason"])
        elif mtype in ("ok", "error"):
            pend = self.pending.pop(int(msg["id"]), None)
            if pend is not None:
                msg = {k: self._clean(v) if k in ("result", "message") else v for k, v in msg.items()}
                msg["id"] = pend.client_id
                msg.pop("v", None)
                mt = msg.pop("type")
                self._reply(pend.client, proto.encode(mt, **msg))

    def _from_client(self, ident: bytes, msg: dict[str, Any]) -> None:
        mtype = msg["type"]
        # only request types are checked for an int `id`: anything else (inf, "x", None) must not crash us
        rid = msg.get("id", 0)
        if not isinstance(rid, int) or isinstance(rid, bool):
            rid = 0
        try:
            if mtype not in proto.REQUEST_TYPES:
                raise FieldError(f"{mtype!r} is not a request a client may send")
            if mtype in ("ps", "snapshot"):
                self._reply(ident, proto.ok(rid, self.status(with_events=mtype == "snapshot")))
            elif mtype == "ping":
                self._reply(ident, proto.ok(rid, {"engine_id": self.engine_id}))
            elif mtype == "stop":
                self._begin_shutdown("stop requested")
                self._reply(ident, proto.ok(rid, {"stopping": True}))
            else:
                self._forward(ident, rid, msg)
        except EngineError as exc:
            self._reply_error(ident, rid, exc)

    def _forward(self, ident: bytes, rid: int, msg: dict[str, Any]) -> None:
        nid = msg["node"]
        st = self.nodes.get(nid)
        if st is None:
            raise UnknownTargetError(f"no node {nid!r}; nodes: {', '.join(self.order)}")
        if msg["type"] == "fault":
            if not self.allow_faults:
                raise NotAllowedError("fault injection is disabled; start the engine with --allow-faults")
            if msg["fault"] in ("kill", "hang"):
                if not st.alive:
                    raise ResourceError(f"node {nid} is not running")
                os.kill(st.pid, signal.SIGKILL if msg["fault"] == "kill" else signal.SIGSTOP)
                self._event(nid, "fault_injected", {"fault": msg["fault"], "pid": st.pid})
                self._reply(ident, proto.ok(rid, {"fault": msg["fault"], "pid": st.pid}))
                return
            self._event(nid, "fault_injected", {"fault": msg["fault"]})
        if not st.alive or st.state != "running":
            raise ResourceError(f"node {nid} is {st.state}; try again when it is running")
        fwd_id = self.next_rid
        self.next_rid += 1
        self.pending[fwd_id] = _Pending(ident, rid, self.now_ns() + int(REQUEST_TIMEOUT_S * NS))
        fields = {k: v for k, v in msg.items() if k not in ("v", "type", "id")}
        self._send_actor(nid, proto.encode(msg["type"], id=fwd_id, **fields))

    def status(self, *, with_events: bool = False) -> dict[str, Any]:
        now = self.now_ns()
        nodes = []
        for nid in self.order:
            st = self.nodes[nid]
            m = st.metrics
            fps_out = sum((m.get("fps_out") or {}).values())
            fps_in = sum((m.get("fps_in") or {}).values())
            nodes.append({
                "id": nid, "kind": st.spec.kind, "pid": st.pid if st.alive else None, "state": st.state,
                "restarts": st.restarts, "fps": round(fps_out or fps_in, 2), "fps_in": round(fps_in, 2),
                "fps_out": round(fps_out, 2),
                "uptime_s": round((now - st.started_ns) / NS, 2) if st.alive else 0.0,
                "last_error": st.last_error,
                "metrics": m,
            })
        out: dict[str, Any] = {
            "engine_id": self.engine_id, "name": self.topo.name, "pid": os.getpid(),
            "control": self.control_endpoint, "events": self.events_endpoint,
            "state": "stopping" if self.stopping else "running", "nodes": nodes,
        }
        if self.public_control or self.public_events:  # remote monitors find the events endpoint here
            out["control_public"], out["events_public"] = self.public_control, self.public_events
        if with_events:
            out["events_recent"] = list(self.events)
        return out
