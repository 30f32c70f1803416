"""A synchronous control-plane client: what `mediaengine ps`, `ctl` and monitors use.

    with ControlClient(endpoint) as c:
        c.request("ps")
        c.request("command", node="enc", command="keyframe", args={})

Replies come back as the `result` of an `ok`, or raise the typed `EngineError` subclass carrying the
protocol's error code.
"""

from __future__ import annotations

import itertools
import os
from types import TracebackType
from typing import Any

import zmq

from ..sdk.errors import EngineError, ResourceError, TimeoutError_, error_from_wire
from ..supervision.curve import configure_client
from ..supervision.rundir import running_engines
from . import protocol as proto


def result_of(reply: dict[str, Any]) -> Any:
    """The `result` of an `ok` reply; an `error` reply raises its typed EngineError."""
    if reply["type"] == "ok":
        return reply.get("result")
    if reply["type"] == "error":
        raise error_from_wire(reply)
    raise EngineError(f"unexpected reply type {reply['type']!r}")


class ControlClient:
    def __init__(self, endpoint: str, *, timeout_s: float = 5.0,
                 curve_keys: str | os.PathLike[str] | None = None) -> None:
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # an engine exposed with CURVE answers only clients with an authorized key (see mediaengine.supervision.curve)
        try:
            configure_client(self.sock, curve_keys)
        except EngineError:
            self.sock.close(0)
            raise
        self.sock.connect(endpoint)
        self._ids = itertools.count(1)

    def request(self, msg_type: str, **fields: Any) -> Any:
        rid = next(self._ids)
        self.sock.send(proto.encode(msg_type, id=rid, **fields))
        while True:
            if not self.sock.poll(self.timeout_ms, zmq.POLLIN):
                raise TimeoutError_(f"no reply from the engine at {self.endpoint} within "
                                    f"{self.timeout_ms / 1000:g}s (is it still running?)")
            reply = proto.decode(self.sock.recv())
            if reply.get("id") != rid:
                continue  # a late reply to an earlier, timed-out request
            return result_of(reply)

    def close(self) -> None:
        self.sock.close(0)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def find_engine(engine_id: str | None = None) -> dict[str, Any]:
    """engine.json of the engine to talk to: the one named, or the only one running."""
    engines = running_engines()
    if engine_id:
        for info in engines:
            if info.get("engine_id") == engine_id:
                return info
        raise ResourceError(f"no running engine {engine_id!r}; `mediaengine ps` lists them")
    if not engines:
        raise ResourceError("no engine is running (start one with `mediaengine run FILE`)")
    if len(engines) > 1:
        ids = ", ".join(str(i.get("engine_id")) for i in engines)
        raise ResourceError(f"{len(engines)} engines are running ({ids}); choose one with --engine ID")
    return engines[0]
