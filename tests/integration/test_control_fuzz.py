"""Fuzzing the control endpoint of a running engine: nothing a client sends stops it or makes it grow.

56,000 messages go to the supervisor's ROUTER from a DEALER (pipelined: up to WINDOW unanswered) while
the demo topology runs and records.  At least half are **well-formed requests with hostile content**:
extra keys of every msgpack type (ints, nil, bools, floats, bytes, ext, reserved names such as
`msg_type`, `result`, `code`), deep and huge values, and valid-looking `command`/`set` requests to every
node with wrong argument types; the rest is garbage (random bytes, non-maps, wrong field types,
truncated requests, several frames, deep nesting).  Every message gets exactly one reply (an `error`
with a documented code, or an `ok` where the request is harmless and valid); a well-formed request
whose outcome is known (a `set` with a wrong type, a command with a non-string argument name) must get
exactly that outcome.  Messages over the 1 MiB limit are dropped by ZeroMQ (MAXMSGSIZE).

Afterwards the engine still answers, every node runs with no restart, the recorder received frames
all along (its input counter advanced during every phase and the file grew), and memory did not grow
with the number of messages (issue 10.6; docs/testing.md, "Fuzz memory bound"): after a warm-up that
makes what the supervisor makes once, every process is sampled, with nothing in flight, over a run of N
messages and one of 3N, and the growth *per message* must show in both runs to count.  The supervisor
is bounded by what it uses (malloc's bytes in use and the interpreter's blocks, from `ps` with
MEDIAENGINE_DEBUG_MEMORY=1), which a leak of 32 bytes per message exceeds several times over, and by
its total RSS growth (< 5 MB); the actors by their RSS.  Those runs carry values up to 8 kB; 2,000
more messages with deep (400 levels) and huge (900 kB) values follow.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import psutil
import pytest
import zmq
from mediaengine.control import protocol as proto
from mediaengine.sdk.errors import ERRORS_BY_CODE

from tests.enginekit import ROOT, Engine, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

DEMO = "topologies/demo.yaml"
WARMUP = 6_000  # enough for 256 messages through each actor's pipes (see _warm_up)
N = 12_000  # the short run; the long run is 3N: WARMUP + N + 3N = 54,000 messages, then HUGE more
HUGE = 2_000
KEY_BURST = 40  # warm-up requests with 2,000 never-seen map keys each (see _warm_up)
SAMPLE_EVERY = 500  # messages between two memory samples
WINDOW = 300
SUPERVISOR_RSS_LIMIT = 5 * 1024 * 1024
# Per message sent to the engine (docs/testing.md, "Fuzz memory bound").  The supervisor: what it uses,
# from `ps` with MEDIAENGINE_DEBUG_MEMORY=1 (engine/supervision/heap.py).  Actors: RSS.
LIVE_PER_MESSAGE_LIMIT = {"malloc_in_use": 8.0, "python_blocks": 0.05}
ACTOR_BYTES_PER_MESSAGE_LIMIT = 24

# the demo's nodes, their live options with the type each takes, and commands that act when valid
LIVE: dict[str, dict[str, type]] = {
    "src": {"text": str}, "tone": {"volume": float, "mute": bool},
    "filt": {"text": str, "x": float, "y": float, "scale": float, "color": str, "box": bool, "box_color": str},
    "venc": {"bitrate_kbps": int}, "aenc": {"bitrate_kbps": int}, "rec": {}, "snap": {"every_s": float},
}
NODES = list(LIVE)
FIXED = {"src": "width", "tone": "rate", "filt": "text", "venc": "preset", "aenc": "resync_ms", "rec": "path",
         "snap": "path"}  # an option that is not live (or, for filt, a live one given below with a wrong type)
ACTING = {"src": ["pause", "resume", "stop"], "venc": ["keyframe", "stop"], "snap": ["snapshot", "stop"],
          "tone": ["stop"], "filt": ["stop"], "aenc": ["stop"], "rec": ["stop"]}
RESERVED_NAMES = ["msg_type", "fields", "result", "code", "name", "message", "pid", "metrics", "data", "reason",
                  "__class__", "self", "kwargs", ""]


_SCALARS: list[Any] = [None, True, False, 0, 0.0, float("inf"), float("nan"), -0.0, 0, 0, "", [1, "a", None],
                       {"k": [1, 2]}, 0, {1: 2, None: 3}]  # indexes 3, 4, 8, 9, 13 are made per call
_KEYS: list[Any] = [0, 0, None, True, False, 0.25, float("nan"), b"raw-key", b"", msgpack.ExtType(1, b"k"), "", ""]


def _wrong_for(tp: type, r: random.Random) -> Any:
    """A value that is not of type `tp` (ints are floats for the engine, so never an int for a float)."""
    pool: list[Any] = [None, [1, 2], {"k": "v"}, b"\x00bytes", msgpack.ExtType(3, b"x"), [], {}]
    if tp is not str:
        pool += ["fast", "", "1e3", "💥" * 50]
    if tp not in (int, float, bool):
        pool += [7, -1, 2**63, 0.5, float("nan"), True]
    if tp is int:
        pool += [1.5, float("inf"), float("nan")]
    return r.choice(pool)


@dataclass
class Fuzzer:
    """Deterministic generator: hostile well-formed requests and plain garbage, with what each must get."""

    seed: int
    next_id: int = 1
    expect: dict[int, str] = field(default_factory=dict)  # request id -> "error" | "ok" | "any"
    hostile: int = 0
    total: int = 0
    huge: bool = False  # values up to 900 kB (else up to 8 kB)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def _rid(self) -> int:
        self.next_id += 1
        return self.next_id

    # ---- values and keys of every msgpack type ---------------------------------------------------
    def _scalar(self) -> Any:
        r = self.rng
        k = r.randrange(15)  # pick first, build one (building every candidate made the client the bottleneck)
        if k == 3:
            return r.randint(-(2**63), 2**64 - 1)
        if k == 4:
            return r.random() * 1e9
        if k == 8:
            return "x" * r.randint(1, 300)
        if k == 9:
            return r.randbytes(r.randint(0, 40))
        if k == 13:
            return msgpack.ExtType(r.randint(0, 127), b"ext")
        return _SCALARS[k]

    def _key(self) -> Any:
        r = self.rng
        k = r.randrange(12)
        if k == 0:
            return r.randint(-(2**63), 2**64 - 1)
        if k == 1:
            return r.randint(-5, 5)
        if k == 10:
            return r.choice(RESERVED_NAMES)
        if k == 11:
            return "x" * r.randint(1, 64)
        return _KEYS[k]

    def _deep(self, depth: int) -> Any:
        value: Any = self._scalar()
        for i in range(depth):
            value = [value] if i % 2 else {"d": value}
        return value

    def _value(self) -> Any:
        r = self.rng
        c = r.random()
        if c < 0.7:
            return self._scalar()
        if c < 0.85:
            return self._deep(r.randint(10, 400 if self.huge else 100))  # msgpack packs up to 512 levels
        if c < 0.97:
            return {self._key(): self._scalar() for _ in range(r.randint(1, 60))}
        if not self.huge:
            return "h" * r.randint(1_000, 8_000)
        if c < 0.995:
            return "h" * r.randint(10_000, 100_000)
        return b"H" * r.randint(300_000, 900_000)  # huge, under the 1 MiB message limit

    def _extras(self, msg: dict[Any, Any]) -> dict[Any, Any]:
        for _ in range(self.rng.randint(1, 6)):
            key = self._key()
            if not (isinstance(key, str) and key in ("v", "type", "id", "node", "command", "args", "options",
                                                      "fault")):
                msg[key] = self._value()
        return msg

    # ---- well-formed requests with hostile content ------------------------------------------------
    def hostile_request(self) -> dict[Any, Any]:
        """A request that passes `decode` (right type, version, id and field types) and must be refused
        or answered without effect."""
        r = self.rng
        rid = self._rid()
        node = r.choice(NODES)
        c = r.random()
        if c < 0.3:  # a live option of this node, or a fixed one, with a wrong type
            opts = LIVE[node]
            name = r.choice(sorted(opts)) if opts and r.random() < 0.7 else FIXED[node]
            value = _wrong_for(opts.get(name, str), r) if name in opts else r.choice(["x", 1, 1.0, True])
            msg: dict[Any, Any] = {"type": "set", "node": node, "options": {name: value}}
            outcome = "error"
        elif c < 0.45:  # a command that would act, but with a non-string argument name: refused unread
            msg = {"type": "command", "node": node, "command": r.choice(ACTING[node]),
                   "args": {self.rng.choice([1, None, b"k", 2.5, -3]): self._scalar()}}
            outcome = "error"
        elif c < 0.55 and node == "snap":  # snapshot with a path of a wrong type
            msg = {"type": "command", "node": node, "command": "snapshot", "args": {"path": _wrong_for(str, r)}}
            outcome = "error"
        elif c < 0.7:  # harmless commands with hostile args
            msg = {"type": "command", "node": node, "command": r.choice(["stats", "frobnicate", "", "💥"]),
                   "args": {"a": self._value(), "msg_type": self._scalar()}}
            outcome = "any"
        elif c < 0.8:  # fault injection is disabled in this engine
            msg = {"type": "fault", "node": node, "fault": r.choice(["kill", "hang", "crash", "exit"]),
                   "args": {"code": self._scalar()}}
            outcome = "error"
        elif c < 0.85:
            msg = {"type": "command", "node": f"ghost{r.randint(0, 99)}", "command": "x", "args": {}}
            outcome = "error"
        elif c < 0.93:
            msg = {"type": r.choice(["ps", "ping"])}
            outcome = "ok"
        else:  # an actor's message from a client: refused whatever it says
            msg = {"type": r.choice(["hello", "heartbeat", "event", "failed", "metrics", "done", "ok", "error"]),
                   "node": node, "name": "x", "data": {}, "pid": 1, "metrics": {}, "code": 1, "message": "m",
                   "reason": "r"}
            outcome = "error"
        body = self._extras({"v": 1, "id": rid, **msg})
        if len(msgpack.packb(body, use_bin_type=True)) > proto.MAX_MESSAGE_BYTES - 1024:  # two huge values
            body = {"v": 1, "id": rid, **msg, "msg_type": b"H" * 500_000}
        self.expect[rid] = outcome
        return body

    # ---- garbage ---------------------------------------------------------------------------------------
    def _garbage(self) -> list[bytes]:
        r = self.rng
        choice = r.random()
        if choice < 0.25:  # random bytes
            return [r.randbytes(r.randint(0, 200))]
        if choice < 0.4:  # msgpack, but not a map
            return [msgpack.packb(self._scalar(), use_bin_type=True)]
        if choice < 0.7:  # a map with wrong or missing fields and types
            msg: dict[Any, Any] = {"v": 1, "type": r.choice(sorted(proto.REQUEST_TYPES - {"stop"})), "id": self._rid(),
                                   "node": r.choice(NODES), "command": "stats", "args": {}, "options": {},
                                   "fault": "kill"}
            for _ in range(r.randint(1, 3)):
                key = r.choice(["v", "type", "id", "node", "command", "args", "options", "fault"])
                if r.random() < 0.3:
                    msg.pop(key, None)
                else:
                    msg[key] = self._scalar()
            if r.random() < 0.2:
                msg["type"] = r.choice(["shutdown", "STOP", "nonsense", 7])
            return [msgpack.packb(msg, use_bin_type=True)]
        if choice < 0.85:  # truncated requests
            request = self.hostile_request()
            self.expect.pop(request["id"])  # cut short, it is garbage: any error will do
            raw = msgpack.packb(request, use_bin_type=True)
            return [raw[: r.randint(0, len(raw) - 1)]]
        if choice < 0.93:  # several frames, or an empty one
            return [b"", msgpack.packb({"v": 1, "type": "ps", "id": 1})] if r.random() < 0.5 else [b"a", b"b", b"c"]
        deep = b"\x91" * r.randint(100, 5000) + b"\x01"  # nesting deeper than a packer allows, by hand
        if r.random() < 0.5:
            return [deep]
        head = b"".join(msgpack.packb(x) for x in ("v", 1, "type", "ps", "id", self._rid(), "deep"))
        return [b"\x84" + head + deep]

    def message(self) -> list[bytes]:
        """One message as a list of frames: 60% hostile well-formed requests, 40% garbage."""
        self.total += 1
        if self.rng.random() < 0.6:
            self.hostile += 1
            return [msgpack.packb(self.hostile_request(), use_bin_type=True)]
        return self._garbage()


def _check_reply(raw: bytes, fuzzer: Fuzzer) -> int:
    """Validate one reply; returns its code (0 for ok)."""
    reply = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    assert isinstance(reply, dict) and reply.get("v") == proto.VERSION, reply
    assert reply["type"] in ("ok", "error"), reply
    want = fuzzer.expect.pop(reply.get("id"), "any")
    if reply["type"] == "error":
        assert reply["code"] in ERRORS_BY_CODE, reply
        assert ERRORS_BY_CODE[reply["code"]].__name__.rstrip("_") == reply["name"], reply
        assert isinstance(reply["message"], str) and reply["message"], reply
        assert reply["code"] != 1409, f"the engine failed on a message (a bug it survived): {reply}"
        assert want != "ok", reply
        return int(reply["code"])
    assert want != "error", f"a hostile request was accepted: {reply}"
    return 0


def _fuzz(sock: zmq.Socket[bytes], fuzzer: Fuzzer, count: int, budget_s: float,
          sample: Callable[[], None] | None = None) -> dict[int, int]:
    """Send `count` messages with at most WINDOW unanswered; returns the replies by code.  With `sample`,
    sending pauses every SAMPLE_EVERY messages until each is answered, then `sample` is called: nothing
    is in flight, so two samples differ by what the engine kept, not by what it was reading."""
    sent = replies = 0
    codes: dict[int, int] = {}
    deadline = time.monotonic() + budget_s
    while replies < count:
        assert time.monotonic() < deadline, f"only {replies} replies to {sent} messages in {budget_s:g}s"
        pause_at = count if sample is None else min(count, (replies // SAMPLE_EVERY + 1) * SAMPLE_EVERY)
        while sent < pause_at and sent - replies < WINDOW:
            sock.send_multipart(fuzzer.message())
            sent += 1
        if not sock.poll(10_000, zmq.POLLIN):
            raise AssertionError(f"no reply for 10 s: {sent} sent, {replies} replies")
        while True:
            try:
                raw = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            code = _check_reply(raw, fuzzer)
            replies += 1
            codes[code] = codes.get(code, 0) + 1
        if sample is not None and replies == sent and replies % SAMPLE_EVERY == 0:
            sample()
    assert not sock.poll(300, zmq.POLLIN), "more replies than messages"
    return codes


def _request(sock: zmq.Socket[bytes], fuzzer: Fuzzer, msg_type: str, **extra: Any) -> Any:
    """One request on the fuzzing socket while nothing else is in flight; returns its result."""
    rid = fuzzer.next_id = fuzzer.next_id + 1
    sock.send(msgpack.packb({"v": proto.VERSION, "type": msg_type, "id": rid, **extra}))
    assert sock.poll(10_000, zmq.POLLIN), f"no reply to {msg_type!r} for 10 s"
    reply = msgpack.unpackb(sock.recv(), raw=False, strict_map_key=False)
    assert reply.get("type") == "ok" and reply.get("id") == rid, reply
    return reply["result"]


def _warm_up(sock: zmq.Socket[bytes], fuzzer: Fuzzer) -> None:
    """Let the supervisor make what it makes once, before the measured runs (docs/testing.md, "Fuzz
    memory bound"): WARMUP messages of the usual mix (a ZeroMQ pipe keeps a spare 16 kB block of its
    queue once it has carried 256 messages: some 0.3 MB over the client's and the actors' pipes), then
    requests with never-seen map keys (msgpack interns every str map key; CPython rebuilds its table
    of interned strings after some 20,000 new ones, and the first rebuild may double it: +0.96 MB)."""
    _fuzz(sock, fuzzer, WARMUP, 60)
    for burst in range(KEY_BURST):
        _request(sock, fuzzer, "ping", keys={f"k{burst}.{i}": i for i in range(2_000)})


@dataclass
class Meter:
    """Memory of the supervisor and of every actor, and the recorder's progress."""

    eng: Engine
    record: Path

    def pids(self) -> dict[str, int]:
        out = {"supervisor": self.eng.proc.pid}
        out.update({n["id"]: int(n["pid"]) for n in self.eng.ps()["nodes"]})
        return out

    def rss(self, pids: dict[str, int]) -> dict[str, int]:
        return {name: psutil.Process(pid).memory_info().rss for name, pid in pids.items()}

    def sample(self, pids: dict[str, int], sock: zmq.Socket[bytes], fuzzer: Fuzzer) -> dict[str, int]:
        """RSS of every process, and what the supervisor uses (heap.py: malloc's bytes in use, the
        interpreter's blocks), from `ps` on the fuzzing socket (a new connection per sample would be
        measured too)."""
        memory = _request(sock, fuzzer, "ps")["memory"]
        return {**self.rss(pids), **{key: int(memory[key]) for key in LIVE_PER_MESSAGE_LIMIT}}

    def rec_frames(self) -> int:
        rec = next(n for n in self.eng.ps()["nodes"] if n["id"] == "rec")
        return int(sum(rec["metrics"].get("frames_in", {}).values()))

    def progress(self, frames: int, size: int) -> tuple[int, int]:
        """Wait until the recorder has received more frames and the recording has grown (its metrics
        come once a second, the file grows by fragments): proof that frames flowed during a phase."""
        return wait_for(lambda: (f, z) if (f := self.rec_frames()) > frames and
                        (z := self.record.stat().st_size) > size else None, 10,
                        "the recorder to receive more frames and the recording to grow")


@pytest.fixture
def demo(engine_runner: Callable[..., Engine], tmp_path: Path) -> Iterator[Engine]:
    # The demo, with a 5 s heartbeat timeout instead of 1.5 s: this test saturates the machine on purpose
    # (the client sends as fast as it can from the same 2 cores), and the encoder starved of CPU on a
    # loaded shared machine is not what is tested here.  A hang or crash still fails the test (restarts
    # must stay 0); hang detection has its own tests (tests/fault/test_restarts.py).
    topology = tmp_path / "demo.yaml"
    topology.write_text((ROOT / DEMO).read_text() + "supervisor: {heartbeat_timeout_s: 5}\n")
    eng = engine_runner(topology, "--set", f"rec.path={tmp_path / 'f.mp4'}", "--set", f"snap.path={tmp_path / 's.png'}",
                        env={"MEDIAENGINE_DEBUG_MEMORY": "1"})  # `ps` reports the supervisor's heap_usage()
    eng.wait_running()
    yield eng
    if eng.proc.poll() is None:  # a clean stop unlinks the rings (the runner's SIGKILL cannot)
        with contextlib.suppress(Exception):
            eng.request("stop")
        with contextlib.suppress(AssertionError):
            eng.wait(30)


def test_fifty_thousand_hostile_and_bad_messages_leave_the_engine_running(demo: Engine, tmp_path: Path) -> None:
    info = demo.info()
    assert info is not None
    meter = Meter(demo, tmp_path / "f.mp4")
    pids = meter.pids()
    ctx: zmq.Context[Any] = zmq.Context()
    main = ctx.socket(zmq.DEALER)
    main.setsockopt(zmq.LINGER, 0)
    main.setsockopt(zmq.SNDHWM, 0)
    main.connect(str(info["control"]))
    big = ctx.socket(zmq.DEALER)
    big.setsockopt(zmq.LINGER, 0)
    big.connect(str(info["control"]))
    fuzzer = Fuzzer(seed=20240601)
    codes: dict[int, int] = {}
    phases: list[tuple[int, float, dict[str, int], int, int]] = []  # (messages, seconds, rss, rec frames, bytes)
    samples: list[list[dict[str, int]]] = []  # Meter.sample() every SAMPLE_EVERY messages, per measured run
    try:
        # Warm-up: first-use allocations are not growth.  The measured runs keep values under 8 kB: the
        # actors keep freed memory on purpose (GLIBC_TUNABLES), so huge values would leave megabytes of
        # slack that hides a leak and steps that look like one; they come after the measurement.
        _warm_up(main, fuzzer)
        rss0 = meter.rss(pids)
        rec0, size0 = meter.progress(0, 0)
        for count in (N, 3 * N):
            t0 = time.monotonic()
            samples.append([])
            for code, k in _fuzz(main, fuzzer, count, 150,
                                 lambda: samples[-1].append(meter.sample(pids, main, fuzzer))).items():
                codes[code] = codes.get(code, 0) + k
            phases.append((count, time.monotonic() - t0, meter.rss(pids),
                           *meter.progress(*(phases[-1][3:] if phases else (rec0, size0)))))
        fuzzer.huge = True  # deep (to 400 levels) and huge (to 900 kB) values
        t0 = time.monotonic()
        for code, k in _fuzz(main, fuzzer, HUGE, 90).items():
            codes[code] = codes.get(code, 0) + k
        phases.append((HUGE, time.monotonic() - t0, meter.rss(pids), *meter.progress(*phases[-1][3:])))
        # oversized: ZeroMQ drops the message and the connection (MAXMSGSIZE); nobody answers, nobody crashes
        for size in (proto.MAX_MESSAGE_BYTES + 1, 3 * proto.MAX_MESSAGE_BYTES):
            big.send(msgpack.packb({"v": 1, "type": "ps", "id": 1, "pad": b"\0" * size}))
        assert not big.poll(500, zmq.POLLIN)
    except AssertionError:
        print(demo.log[-6000:])
        raise
    finally:
        main.close(0)
        big.close(0)
        ctx.term()

    total = WARMUP + N + 3 * N + HUGE
    assert fuzzer.total == total >= 50_000
    assert fuzzer.hostile >= total // 2, f"only {fuzzer.hostile} of {total} were well-formed hostile requests"
    assert not fuzzer.expect, f"{len(fuzzer.expect)} well-formed requests got no reply"
    for code in (1401, 1402, 1403, 1404, 1405, 1407, 1108, 1410):  # every kind of refusal showed up
        assert codes.get(code, 0) > 0, f"no error {code} among {codes}"
    assert codes.get(0, 0) > 0, "the valid requests got no ok"

    # frames flowed to the recorder during each phase, and the recording grew
    (_, t1, rss1, rec1, size1), (_, t3, rss3, rec3, size3), (_, th, rss_end, rec_end, size_end) = phases
    assert rec0 < rec1 < rec3 < rec_end and size0 < size1 < size3 < size_end  # checked by progress() too

    # memory, per message, over the runs of N and 3N messages (docs/testing.md, "Fuzz memory bound").
    # Samples are taken with nothing in flight.  Each run's growth is taken between the lowest value of
    # its first quarter and of its last quarter (a leak lifts the floor, churn does not), and a leak must
    # show in both runs: a one-time step lands in one.  The smaller of the two per-message rates counts.
    # The supervisor is bounded by what it *uses* (malloc's bytes in use, the interpreter's blocks):
    # its RSS also rises in one-time steps of up to a few MB (ZeroMQ's I/O thread keeps its malloc arena
    # as large as the longest backlog so far), so RSS is only reported, and bounded in total.  Actors
    # are bounded by RSS (their heaps are not reachable from here).
    def floor_growth(run: list[dict[str, int]], key: str) -> float:
        q = max(1, len(run) // 4)
        return (min(r[key] for r in run[-q:]) - min(r[key] for r in run[:q])) / ((len(run) - q) * SAMPLE_EVERY)

    per_message = {key: min(floor_growth(samples[0], key), floor_growth(samples[1], key)) for key in samples[0][0]}
    report = {name: f"{(rss1[name] - rss0[name]) / 1e3:+.0f}/{(rss3[name] - rss1[name]) / 1e3:+.0f} kB, "
                    f"{per_message[name]:+.1f} B/msg" for name in pids}
    live = {key: f"{per_message[key]:+.3g}/msg" for key in LIVE_PER_MESSAGE_LIMIT}
    print(f"\n{total} messages ({fuzzer.hostile} hostile well-formed) in {t1 + t3 + th:.1f}s after warm-up; "
          f"replies by code {dict(sorted(codes.items()))}\nRSS growth over N/3N: {report}\n"
          f"supervisor in use: {live}")
    sup_growth = rss_end["supervisor"] - rss0["supervisor"]
    assert sup_growth < SUPERVISOR_RSS_LIMIT, f"supervisor RSS grew by {sup_growth / 1e6:.1f} MB"
    kept = {key: per_message[key] for key, limit in LIVE_PER_MESSAGE_LIMIT.items() if per_message[key] > limit}
    assert not kept, f"the supervisor keeps memory per message: {live} (limits {LIVE_PER_MESSAGE_LIMIT})"
    leaking = {name: per_message[name] for name in pids
               if name != "supervisor" and per_message[name] > ACTOR_BYTES_PER_MESSAGE_LIMIT}
    assert not leaking, f"an actor's memory grows with the number of messages: {report}"

    # the engine carries on: every node runs, not one restarted, frames still flow
    nodes = wait_for(lambda: _all_flowing(demo), 10, "every node running with frames flowing after the fuzzing")
    assert all(n["restarts"] == 0 for n in nodes.values()), {k: n["restarts"] for k, n in nodes.items()}
    assert {name: pid for name, pid in meter.pids().items()} == pids, "a process was replaced"
    demo.request("stop")
    assert demo.wait(30) == 0, demo.log


def _all_flowing(eng: Engine) -> dict[str, Any] | None:
    nodes = {n["id"]: n for n in eng.ps()["nodes"]}
    return nodes if all(n["state"] == "running" and n["fps"] > 0 for n in nodes.values()) else None
