"""The supervisor: starts the actors of a topology, watches them, restarts the ones that fail.

One process, one loop, no threads: a ZeroMQ poller over the control ROUTER socket, every actor's
process sentinel (death is noticed at once) and a signal wake-up pipe.  (One optional helper thread
works on the side without touching the loop's state: the Prometheus server of `--metrics-port`; see
docs/monitoring.md.)  Hangs are noticed from missed heartbeats.  Restart decisions come from `_policy`
(OTP vocabulary); rings are created here, before any actor starts, so a crashed actor never takes a
ring with it, and unlinked at the end.

Clients and actors use different sockets, both in the poller (docs/security.md): the control ROUTER
takes requests only, and nothing a client sends, whatever its content, raises out of the loop (an
unexpected error is logged with its code and answered with `RequestFailedError`); the actors' ROUTER
takes actor messages only from connections that authenticated with this run's per-node CURVE keys,
checked by a ZAP socket answered from the same loop (engine/supervision/zap.py).

Shutdown is orderly: sources are told to stop first; each actor ends when its inputs end (end of
stream travels down the graph, encoders flush, files are finalised); nodes whose upstream is gone are
told to stop too; after `shutdown_timeout_s` what is left is terminated, then killed.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import signal
import socket
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

from ..control import protocol as proto
from ..runtime.ring import FrameRing, segment_name
from ..runtime.spec import PRELOAD_ENV, ActorSpec, ConsumerSpec, InputSpec, OutputSpec
from ..sdk.errors import (
    ERRORS_BY_CODE,
    ActorAuthError,
    ActorOnlyError,
    BusyError,
    EngineError,
    FieldError,
    GroupGaveUpError,
    IntensityExceededError,
    MalformedMessageError,
    NotAllowedError,
    RequestFailedError,
    ResourceError,
    SharedMemoryError,
    TimeoutError_,
    UnknownTargetError,
)
from ..sdk.formats import NS, EncodedFormat, format_to_wire
from ..sdk.redact import redact_value
from ..topology.loader import GroupSpec, NodeSpec, Topology
from ..topology.registry import get_kind
from .curve import CurveServer, check_exposure
from .heap import bound_heap_growth, heap_usage
from .policy import (
    Backoff,
    IntensityTracker,
    StabilityTracker,
    affected_members,
    should_restart,
    when_group_exhausted,
)
from .prometheus import MetricsServer
from .rundir import ENGINE_MARKER, RunDir, process_start_time, reap_stale
from .zap import ACTOR_PREFIX, ActorKeys, ZapHandler, user_id

log = logging.getLogger("mediaengine")

REQUEST_TIMEOUT_S = 5.0
CLIENT_SLICE_S = 0.02  # client requests handled per loop turn, at most (then actors, exits, timers)
MAX_PENDING_PER_NODE = 64  # forwarded requests a node may have unanswered; more get BusyError
# The fork server imports these once; every actor process forked from it starts with them loaded.  The
# CLI's modules are in the list because multiprocessing re-runs the main module (`python -m
# mediaengine.cli`, the `mediaengine` script, `tools.bench._host`) in every child before the actor
# starts: each of them imports `mediaengine.cli.main`, which then costs nothing (measured: the restarted
# filter's first frame 160-230 ms after SIGKILL without it).
PRELOAD = ["mediaengine.runtime.preload", "mediaengine.cli.main"]
GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=268435456"


class NodeStatus(enum.StrEnum):
    """Where a node is in its life (shown by `ps` and the monitor; a str, so it goes on the wire as is)."""

    NEW = "new"  # not started yet
    STARTING = "starting"  # process started, no hello/heartbeat yet
    RUNNING = "running"
    RESTARTING = "restarting"  # dead, a restart is scheduled
    STOPPED = "stopped"  # ended by request or normally, or not restarted by its policy
    DONE = "done"  # the actor finished on its own (`Finish`)
    FAILED = "failed"  # ended abnormally and not restarted


#: states in which a node has ended for good
FINAL_STATES = frozenset({NodeStatus.DONE, NodeStatus.STOPPED, NodeStatus.FAILED})


@dataclass
class NodeState:
    spec: NodeSpec
    stability: StabilityTracker
    proc: Any = None
    pid: int = 0
    state: NodeStatus = NodeStatus.NEW
    restarts: int = 0
    last_hb_ns: int = 0
    started_ns: int = 0
    restart_due_ns: int | None = None
    told_shutdown: bool = False
    restart_after_exit: bool = False
    killed_for_hang: bool = False
    given_up: bool = False  # its group gave up (temporary group beyond its intensity): never restarted
    done_reason: str | None = None
    last_error: str | None = None
    last_code: int | None = None  # code of last_error
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.proc is not None


@dataclass
class _Pending:
    client: bytes
    client_id: int
    deadline_ns: int
    node: str = ""
    origin: str = ""  # a node's `Configure` (no client): its refusal becomes event configure_failed


class Supervisor:
    """Run one topology until it ends, is stopped, or gives up.  `run()` returns the exit status."""

    def __init__(self, topology: Topology, *, duration_s: float | None = None, allow_faults: bool = False,
                 control_endpoint: str | None = None, events_endpoint: str | None = None,
                 public_control: str | None = None, public_events: str | None = None,
                 curve_keys: str | os.PathLike[str] | None = None, insecure_loopback: bool = False,
                 metrics_port: int = 0, metrics_host: str = "127.0.0.1", debug_memory: bool = False) -> None:
        # TCP needs CURVE keys (on loopback too, unless insecure_loopback): refused here, before anything
        # is created or bound.  public_control/public_events are extra binds (e.g. tcp://0.0.0.0:5555) of
        # the same sockets; local tools keep using the ipc endpoints, actors have a socket of their own.
        # See engine/supervision/curve.py and zap.py, docs/security.md.
        self.open_locally = check_exposure((control_endpoint, events_endpoint, public_control, public_events),
                                           curve_keys, insecure_loopback=insecure_loopback)
        self.curve = CurveServer.load(curve_keys) if curve_keys is not None else None
        self.actor_keys = ActorKeys.generate([n.id for n in topology.nodes])
        self.public_control = public_control
        self.public_events = public_events
        self.metrics_port = metrics_port  # Prometheus /metrics on an HTTP thread; 0 = off (engine/_prometheus.py)
        self.metrics_host = metrics_host
        self.debug_memory = debug_memory  # `ps` carries the supervisor's heap_usage() (heap.py); tests only
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
        self.actors_endpoint = self.rundir.endpoint("actors.sock")
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
        self.pending_per_node: Counter[str] = Counter()  # bounded by MAX_PENDING_PER_NODE
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
        self.router = self.ctx.socket(zmq.ROUTER)  # clients: requests only
        self.actor_router = self.ctx.socket(zmq.ROUTER)  # actors only, CURVE with this run's keys
        self.pub = self.ctx.socket(zmq.PUB)
        self.zap: ZapHandler | None = None
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
        bound_heap_growth()  # large client messages must not ratchet our heap up (heap.py)
        for sock in (self.router, self.actor_router, self.pub):
            sock.setsockopt(zmq.LINGER, 0)
        for sock in (self.router, self.actor_router):
            sock.setsockopt(zmq.MAXMSGSIZE, proto.MAX_MESSAGE_BYTES)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        # A restarted actor reconnects with its predecessor's identity (a:<node>) within milliseconds,
        # possibly before the dead connection is torn down: the new connection must take the identity
        # over, or ROUTER would ignore the newcomer and the restart would look hung.  Only on the actors'
        # socket, where ZAP lets a connection use a:<node> only with that node's key; on the clients'
        # socket a second connection with a used routing id is refused, not handed the route.
        self.actor_router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.router.setsockopt(zmq.ROUTER_HANDOVER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 10000)
        # ZAP (zap.py) answers from this loop: the actors' keys always, the clients' keys with --curve-keys
        try:
            self.zap = ZapHandler(self.ctx, self.actor_keys,
                                  self.curve.authorized if self.curve is not None else None)
        except zmq.ZMQError as exc:
            raise ResourceError(f"cannot start the ZAP authentication handler: {exc}") from None
        self.actor_keys.make_server(self.actor_router)
        if self.curve is not None:
            for sock in (self.router, self.pub):
                self.curve.make_server(sock)
        for ep in self.open_locally:
            self._say(logging.WARNING, f"{ep} has no CURVE keys (--insecure-loopback): every local user can "
                                       "connect, drive and stop this engine")
        binds = [(self.router, self.control_endpoint), (self.actor_router, self.actors_endpoint),
                 (self.pub, self.events_endpoint)]
        binds += [(sock, ep) for sock, ep in ((self.router, self.public_control), (self.pub, self.public_events))
                  if ep]
        for sock, endpoint in binds:
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise ResourceError(f"cannot bind {endpoint}: {exc}; is another engine using it?") from None
        # a wildcard port (tcp://127.0.0.1:*) is reported as the port the system chose
        if self.public_control:
            self.public_control = self.router.get_string(zmq.LAST_ENDPOINT)
        if self.public_events:
            self.public_events = self.pub.get_string(zmq.LAST_ENDPOINT)
        if self.metrics_port:
            self.metrics_server = MetricsServer(self.metrics_host, self.metrics_port)
            self.metrics_server.update(self.status())
            self.metrics_server.start()

    def _create_rings(self) -> None:
        for node in self.topo.nodes:
            for pad, edges in node.outputs.items():
                fmt = node.output_formats[pad]
                if isinstance(fmt, EncodedFormat):
                    continue
                name = segment_name(self.engine_id, node.id, pad)
                depth = 4 if fmt.kind == "video" else 16
                # slots fit the largest size the stream may switch to (docs/architecture.md, format changes)
                try:
                    ring = FrameRing.create(name, slot_bytes=fmt.slot_bytes, consumers=len(edges), depth=depth,
                                            format_info=msgpack.packb(format_to_wire(fmt)))
                except SharedMemoryError as exc:  # name the ring as the topology does: node and pad
                    raise SharedMemoryError(exc.message, where=f"node {node.id} output {pad!r}") from None
                self.rings.append(ring)
                self.ring_names[(node.id, pad)] = name

    def _data_endpoint(self, node_id: str) -> str:
        return self.rundir.endpoint(f"data-{node_id}.sock")

    def _spec(self, st: NodeState) -> ActorSpec:
        n = st.spec
        outputs = {
            pad: OutputSpec(
                format=n.output_formats[pad],
                ring=self.ring_names.get((n.id, pad)),
                consumers=tuple(ConsumerSpec(e.dst, e.dst_pad, i, e.policy, self._data_endpoint(e.dst))
                                for i, e in enumerate(edges)),
            )
            for pad, edges in n.outputs.items()
        }
        inputs = {}
        for pad, e in n.inputs.items():
            src = self.topo.node(e.src)
            index = list(src.outputs[e.src_pad]).index(e)
            inputs[pad] = InputSpec(e.format, self.ring_names.get((e.src, e.src_pad)), index, e.policy)
        return ActorSpec(
            engine_id=self.engine_id,
            node=n.id,
            kind=n.kind,
            options=n.options,  # validated and frozen by the loader; pickled to the actor as is
            control=self.actors_endpoint,  # the actors' socket, not the clients' control endpoint
            data_endpoint=self._data_endpoint(n.id),
            epoch_ns=self.epoch_ns,
            heartbeat_interval_s=self.sup.heartbeat_interval_s,
            inputs=inputs,
            outputs=outputs,
            restart_count=st.restarts,
            allow_faults=self.allow_faults,
            output_dir=self.topo.output_dir,  # where commands may write files (sdk/outputs.py)
            supervisor_pid=os.getpid(),
            curve=self.actor_keys.for_node(n.id),  # this node's keypair for this run (spec only, never argv)
        )

    def _mp(self) -> Any:
        if self.mp_ctx is None:
            import multiprocess

            # Per-frame temporaries of 1-3 MB would otherwise be mmapped and unmapped by glibc on every
            # frame (thousands of page faults, +2-3 ms); the fork server and so every actor inherit this.
            os.environ.setdefault("GLIBC_TUNABLES", GLIBC_TUNABLES)
            # One BLAS thread per actor: each actor is its own process on purpose, and OpenBLAS's idle
            # workers spin after every call (np.tensordot in the beauty warp woke one that then burned
            # ~23 ms of CPU per 30 fps frame, measured by the beauty benchmark)
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
            # Every actor carries its engine's id in its environment: the only proof `reap_stale`
            # accepts before it kills a pid named in a dead engine's engine.json (rundir.py).
            os.environ[ENGINE_MARKER] = self.engine_id
            # heavy modules this topology's kinds import in `setup` (mediapipe for `beauty`): loaded once
            # in the fork server, so a restarted node does not import them again with its input stalled
            os.environ[PRELOAD_ENV] = ",".join(self._kind_preloads())

            ctx = multiprocess.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            self.mp_ctx = ctx
        return self.mp_ctx

    def _kind_preloads(self) -> list[str]:
        """The modules the kinds of this topology declare in `Actor.preload`, each once, in node order."""
        names: dict[str, None] = {}
        for node in self.topo.nodes:
            names.update(dict.fromkeys(get_kind(node.kind).preload))
        return list(names)

    def _start(self, st: NodeState) -> None:
        from ..runtime.actor_runtime import actor_main

        proc = self._mp().Process(target=actor_main, args=(self._spec(st),), name=f"me-{st.spec.id}",
                                  daemon=False)
        proc.start()
        st.proc, st.pid = proc, int(proc.pid)
        st.last_code = None  # a new run: judge its own failure
        st.state = NodeStatus.STARTING
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
        # SIGHUP (the terminal or ssh session went away) stops cleanly like SIGTERM
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
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
        poller.register(self.actor_router, zmq.POLLIN)
        assert self.zap is not None
        poller.register(self.zap.sock, zmq.POLLIN)
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
            if self.zap.sock in events:
                for refused in self.zap.handle():
                    self._say(logging.WARNING, f"refused a connection to the actors' socket: {refused.reason} "
                                               f"(error {ActorAuthError.code})")
            if self.router in events:
                self._handle_router()
            # always, right before the hang check: heartbeats that came while clients were served count
            self._handle_actors()
            exited = [nid for fd, nid in registered.items() if fd in events]
            # an actor that failed with an error sends `failed` and then exits with status 1: the message
            # may still be on the way, and it says whether a restart can help (_handle_exit).  One killed
            # by a signal sent nothing: it is restarted at once.
            if any(self._exited_with_status(nid) for nid in exited) and self.actor_router.poll(50):
                self._handle_actors()
            for nid in exited:
                self._handle_exit(self.nodes[nid])
            self._timers()
            self._export_metrics()

    def _export_metrics(self) -> None:
        """Hand the Prometheus thread a fresh status dict twice a second (a reference swap, no lock)."""
        if self.metrics_server is not None and self.now_ns() >= self.metrics_refresh_ns:
            self.metrics_server.update(self.status())
            self.metrics_refresh_ns = self.now_ns() + NS // 2

    def _all_ended(self) -> bool:
        return all(st.state in FINAL_STATES for st in self.nodes.values())

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
                # until its `hello` (sent after `setup()`) a node has the startup timeout, not the heartbeat's
                starting = st.state != NodeStatus.RUNNING
                limit = int(self.sup.startup_timeout_s * NS) if starting else hb_timeout
                if now - st.last_hb_ns > limit:
                    silent = f"{(now - st.last_hb_ns) / NS:.1f}s"
                    self._say(logging.WARNING,
                              f"node {st.spec.id} did not finish starting (setup) within {silent} "
                              f"(supervisor.startup_timeout_s; pid={st.pid}); replacing it" if starting else
                              f"node {st.spec.id} missed heartbeats for {silent} (pid={st.pid}); replacing it")
                    self._event(st.spec.id, "hang_detected", {"pid": st.pid})
                    st.killed_for_hang = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(st.pid, signal.SIGKILL)
            if st.state == NodeStatus.RESTARTING and st.restart_due_ns is not None and now >= st.restart_due_ns:
                if self.stopping:
                    st.state = NodeStatus.STOPPED
                else:
                    self._start(st)
        if (self.duration_s is not None and self.run_started_ns is not None and not self.stopping
                and now - self.run_started_ns >= int(self.duration_s * NS)):
            self._say(logging.INFO, f"duration of {self.duration_s:g}s reached: stopping")
            self._begin_shutdown("duration reached")
        for rid, pend in list(self.pending.items()):
            if now > pend.deadline_ns:
                self._take_pending(rid)
                if pend.origin:
                    self._event(pend.origin, "configure_failed", {"target": pend.node, "code": TimeoutError_.code,
                                                                  "message": "the node did not answer in time"})
                    continue
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
            if st.state == NodeStatus.RESTARTING:
                st.state = NodeStatus.STOPPED
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
    def _exited_with_status(self, nid: str) -> bool:
        """Whether node `nid`'s process has ended with a non-zero exit status (not by a signal)."""
        proc = self.nodes[nid].proc
        if proc is None:
            return False
        proc.join(0.2)  # its sentinel fired: reaping it is immediate
        return proc.exitcode is not None and proc.exitcode > 0

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
            st.state = NodeStatus.STOPPED if normal or code == 0 else NodeStatus.FAILED
            self._say(logging.INFO if code == 0 else logging.WARNING, f"node {nid} exited ({how})")
            return
        if st.restart_after_exit:
            st.restart_after_exit = False
            self._schedule_restart(st, 0)
            return
        if normal:
            st.state = NodeStatus.DONE
            self._say(logging.INFO, f"node {nid} finished: {st.done_reason}")
            return
        detail = f": {st.last_error}" if st.last_error else ""
        self._say(logging.WARNING, f"node {nid} died ({how}){detail}")
        abnormal = code != 0 or st.killed_for_hang
        if st.given_up:  # its group gave up while it was running: it stays down
            st.state = NodeStatus.FAILED
            return
        cls = ERRORS_BY_CODE.get(st.last_code) if st.last_code is not None else None
        if cls is not None and not cls.restartable and not st.killed_for_hang:
            st.state = NodeStatus.FAILED  # bad input: restarting would fail the same way, in a loop
            self._event(nid, "gave_up", {"code": st.last_code, "reason": f"{cls.__name__}: a restart cannot cure it"})
            self._say(logging.WARNING, f"node {nid} is not restarted: {cls.__name__} ({st.last_code}) is not "
                      "cured by a restart; the rest of the engine keeps running")
            return
        if not should_restart(st.spec.restart, abnormal):
            st.state = NodeStatus.FAILED if abnormal else NodeStatus.STOPPED
            self._say(logging.INFO, f"node {nid} is {st.spec.restart}: not restarted; the rest runs on")
            self._event(nid, "gave_up", {"restart": st.spec.restart, "error": st.last_error,
                                         "code": st.last_code})
            return
        now = self.now_ns()
        group = self.groups.get(st.spec.group) if st.spec.group else None
        why = f"(last: node {nid} {how}{detail})"
        # OTP: a group is a supervisor of its own; its members' restarts count against its intensity
        # only, and only its escalation counts against the engine's.
        if group is not None and self.group_intensity[group.name].record(now):
            self._group_exhausted(group, why)
            return
        if group is None and self.engine_intensity.record(now):
            self._fail(IntensityExceededError(
                f"more than {self.sup.intensity} restarts within {self.sup.period_s:g}s {why}; giving up"))
            return
        failures = st.stability.failed()
        delay = self.backoff.delay_ns(failures)
        members = [m for m in self.order if group is not None and m in group.members]
        targets = affected_members(group.strategy, members, nid) if group is not None else [nid]
        self._restart_others(targets, nid)
        self._schedule_restart(st, delay)

    def _restart_others(self, targets: list[str], failed: str) -> None:
        """Kill the live `targets` other than `failed`; each is restarted when its exit is seen."""
        for other in targets:
            ost = self.nodes[other]
            if other == failed:
                continue
            if ost.alive:
                ost.restart_after_exit = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(ost.pid, signal.SIGKILL)

    def _group_exhausted(self, group: GroupSpec, why: str) -> None:
        """The group's own intensity is exceeded: it gives up alone, or escalates to the engine."""
        limit = f"more than {group.intensity} restarts within {group.period_s:g}s {why}"
        members = [m for m in self.order if m in group.members]
        if when_group_exhausted(group.restart) == "give_up":
            err = GroupGaveUpError(f"group {group.name!r}: {limit}; it is temporary, so its members "
                                   f"({', '.join(members)}) stay stopped and the engine runs on")
            self._say(logging.WARNING, str(err))
            self._event("engine", "group_gave_up", {"group": group.name, "members": members,
                                                    "code": err.code, "message": str(err)})
            for m in members:
                mst = self.nodes[m]
                mst.given_up = True
                mst.restart_after_exit = False
                if mst.alive:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(mst.pid, signal.SIGKILL)
                else:
                    mst.state = NodeStatus.FAILED
                    mst.restart_due_ns = None
            return
        now = self.now_ns()
        if self.engine_intensity.record(now):
            self._fail(IntensityExceededError(
                f"group {group.name!r}: {limit}, and the engine allows no more than {self.sup.intensity} "
                f"restarts within {self.sup.period_s:g}s; giving up"))
            return
        self._say(logging.WARNING, f"group {group.name!r}: {limit}; restarting the whole group (escalated)")
        self._event("engine", "group_escalated", {"group": group.name, "members": members})
        self.group_intensity[group.name] = IntensityTracker(group.intensity, group.period_s)
        for m in members:
            mst = self.nodes[m]
            if mst.alive:
                mst.restart_after_exit = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(mst.pid, signal.SIGKILL)
            elif mst.state != NodeStatus.RESTARTING:
                failures = mst.stability.failed()
                self._schedule_restart(mst, self.backoff.delay_ns(failures))

    def _schedule_restart(self, st: NodeState, delay_ns: int) -> None:
        st.state = NodeStatus.RESTARTING
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
                if st.state not in (NodeStatus.DONE, NodeStatus.FAILED):
                    st.state = NodeStatus.STOPPED

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
        self.actor_router.close(0)
        self.pub.close(0)
        if self.zap is not None:
            self.zap.close()
        self.ctx.term()
        self.rundir.remove()

    # ---- control plane ----------------------------------------------------------------------------
    def _send_actor(self, node: str, raw: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.actor_router.send_multipart([ACTOR_PREFIX + node.encode(), raw], zmq.NOBLOCK)

    def _reply(self, client: bytes, raw: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.router.send_multipart([client, raw], zmq.NOBLOCK)

    def _reply_error(self, client: bytes, rid: int, err: EngineError) -> None:
        self._reply(client, proto.error(rid, err))

    def _handle_router(self) -> None:
        """Client requests.  Nothing a client sends may raise out of here (issue 9.1): an unexpected
        exception is logged with its code and answered with RequestFailedError, and the loop goes on.
        At most CLIENT_SLICE_S of work per loop turn, so a flood of requests cannot delay heartbeats,
        exits and timers (what is left waits for the next turn)."""
        until = time.monotonic() + CLIENT_SLICE_S
        for _ in range(1000):
            if time.monotonic() > until:
                return
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
                self._from_client(ident, msg)
            except EngineError as exc:
                self._reply_error(ident, proto.request_id(raw), exc)
            except Exception as exc:  # a bug in handling one message must not stop every actor
                err = RequestFailedError(f"the engine failed to handle this {type(exc).__name__}: {exc}; the "
                                         "request was dropped, the engine goes on (please report it)")
                self._say(logging.ERROR, f"control request failed: {err} (error {err.code})")
                self._reply_error(ident, proto.request_id(raw), err)

    def _handle_actors(self) -> None:
        """Actor messages, from connections ZAP authenticated with a node's key (zap.py).  The ZAP user id
        on each message must be the node its routing id names; anything else is dropped unread."""
        for _ in range(1000):
            try:
                frames = self.actor_router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) != 2:
                continue
            ident, body = frames[0].bytes, frames[1]
            nid = ident[len(ACTOR_PREFIX):].decode(errors="replace")
            if not ident.startswith(ACTOR_PREFIX) or user_id(body) != nid:
                self._say(logging.WARNING, f"dropped a message on the actors' socket from {ident[:64]!r}: not "
                                           f"authenticated as that node (error {ActorAuthError.code})")
                continue
            try:
                self._from_actor(nid, proto.decode(body.bytes))
            except EngineError as exc:
                self._say(logging.WARNING, f"node {nid} sent a bad message: {exc} (error {exc.code})")
            except Exception as exc:  # our own actors, but one bad message must not stop the engine
                err = RequestFailedError(f"handling a message of node {nid} failed: {type(exc).__name__}: {exc}")
                self._say(logging.ERROR, f"{err} (error {err.code})")

    def _from_actor(self, nid: str, msg: dict[str, Any]) -> None:
        st = self.nodes.get(nid)
        if st is None:
            return
        mtype = msg["type"]
        now = self.now_ns()
        st.last_hb_ns = now
        if st.stability.heartbeat(now) and st.restarts:
            self._event(nid, "restart_stable", {"restarts": st.restarts})
        if mtype in ("hello", "heartbeat") and st.state == NodeStatus.STARTING:
            st.state = NodeStatus.RUNNING  # a heartbeat also proves the actor is up, should its hello be lost
        if mtype == "hello":
            if self.run_started_ns is None and all(s.state == NodeStatus.RUNNING for s in self.nodes.values()):
                self.run_started_ns = now
                self._event("engine", "running", {})
        elif mtype == "metrics":
            st.metrics = self._clean(msg["metrics"])
            self._publish(f"metrics.{nid}", {"node": nid, "t": time.time(), **st.metrics})
        elif mtype == "event":
            self._event(nid, msg["name"], msg["data"])
        elif mtype == "failed":
            st.last_error = self._clean(msg["message"])
            st.last_code = msg["code"] if isinstance(msg.get("code"), int) else None
            self._event(nid, "error", {"code": msg["code"], "message": st.last_error})
        elif mtype == "done":
            st.done_reason = self._clean(msg["reason"])
        elif mtype == "configure":
            self._configure(nid, msg["target"], msg["options"])
        elif mtype in ("ok", "error"):
            pend = self._take_pending(int(msg["id"]))
            if pend is not None and pend.origin:  # the answer to a node's Configure
                if mtype == "error":
                    self._event(pend.origin, "configure_failed", {
                        "target": pend.node, "code": msg.get("code"), "message": self._clean(msg.get("message"))})
            elif pend is not None:  # relayed as a map: whatever its keys, never as **kwargs
                clean = {k: self._clean(v) if k in ("result", "message") else v for k, v in msg.items()}
                self._reply(pend.client, proto.encode_map(mtype, {**clean, "id": pend.client_id}))

    def _from_client(self, ident: bytes, msg: dict[str, Any]) -> None:
        mtype = msg["type"]
        # only request types are checked for an int `id`: anything else (inf, "x", None) must not crash us
        rid = msg.get("id", 0)
        if not isinstance(rid, int) or isinstance(rid, bool):
            rid = 0
        try:
            if mtype in proto.ACTOR_TYPES:
                raise ActorOnlyError(f"{mtype!r} is sent by the engine's own actors, on their own authenticated "
                                     f"socket; clients send requests: {', '.join(sorted(proto.REQUEST_TYPES))}")
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

    def _configure(self, origin: str, target: str, options: dict[str, Any]) -> None:
        """Route a node's `Configure` to `target` as a `set` (the answer comes back to `_from_actor`)."""
        st = self.nodes.get(target)
        why = ""
        if st is None:
            why = f"no node {target!r}; nodes: {', '.join(self.order)}"
        elif not st.alive or st.state != NodeStatus.RUNNING:
            why = f"node {target} is {st.state}"
        elif self.pending_per_node[target] >= MAX_PENDING_PER_NODE:
            why = f"node {target} has too many requests waiting"
        if why:
            code = UnknownTargetError.code if st is None else ResourceError.code
            self._event(origin, "configure_failed", {"target": target, "code": code, "message": why})
            return
        fwd_id = self.next_rid
        self.next_rid += 1
        self.pending[fwd_id] = _Pending(b"", 0, self.now_ns() + int(REQUEST_TIMEOUT_S * NS), target, origin)
        self.pending_per_node[target] += 1
        self._send_actor(target, proto.encode_map("set", {"id": fwd_id, "node": target, "options": options}))

    def _take_pending(self, fwd_id: int) -> _Pending | None:
        pend = self.pending.pop(fwd_id, None)
        if pend is not None:
            self.pending_per_node[pend.node] -= 1
        return pend

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
        if not st.alive or st.state != NodeStatus.RUNNING:
            raise ResourceError(f"node {nid} is {st.state}; try again when it is running")
        waiting = self.pending_per_node[nid]
        if waiting >= MAX_PENDING_PER_NODE:
            raise BusyError(f"node {nid} has {waiting} requests waiting for an answer; try again when it has "
                            "answered them")
        fwd_id = self.next_rid
        self.next_rid += 1
        self.pending[fwd_id] = _Pending(ident, rid, self.now_ns() + int(REQUEST_TIMEOUT_S * NS), nid)
        self.pending_per_node[nid] += 1
        # the client's map is forwarded as a map (its keys may be anything msgpack holds), never as **kwargs
        self._send_actor(nid, proto.encode_map(msg["type"], {**msg, "id": fwd_id}))

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
        if self.debug_memory:
            out["memory"] = heap_usage().to_wire()
        return out
