"""mediaengine: a live-streaming ingest engine.

Actors run as OS processes, raw frames travel over shared-memory rings, control, heartbeats, events
and metrics over ZeroMQ + msgpack, and a supervisor restarts whatever fails.  This package re-exports
the small public API; the layers live in subpackages: `sdk` (what actors import), `topology`,
`runtime`, `supervision`, `control` (protocol, client, Python API, event subscriptions) and `cli`.
"""

from typing import TYPE_CHECKING, Any

from .sdk.actor import Actor, Context, Emit, EndOfStream, Event, Finish, InPort, OutPort, Reply, option
from .sdk.errors import (
    EngineError,
    FormatError,
    NotAllowedError,
    OptionError,
    ProtocolError,
    ResourceError,
    SupervisorError,
    TopologyError,
    UnknownCommandError,
    UnknownTargetError,
)
from .sdk.formats import AAC, H264, AudioFormat, EncodedFormat, Frame, Packet, VideoFormat

if TYPE_CHECKING:
    from .control.api import AsyncEngine, Engine


def __getattr__(name: str) -> Any:
    # The Python API (mediaengine.control.api) pulls in asyncio and zmq.asyncio: loaded on first use, so actor
    # processes, which import this package too, do not pay for it.
    if name in ("AsyncEngine", "Engine"):
        from .control import api

        return getattr(api, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")


__all__ = [
    "AAC",
    "H264",
    "Actor",
    "AsyncEngine",
    "AudioFormat",
    "Context",
    "Emit",
    "EncodedFormat",
    "EndOfStream",
    "Engine",
    "EngineError",
    "Event",
    "Finish",
    "FormatError",
    "Frame",
    "InPort",
    "NotAllowedError",
    "OptionError",
    "OutPort",
    "Packet",
    "ProtocolError",
    "Reply",
    "ResourceError",
    "SupervisorError",
    "TopologyError",
    "UnknownCommandError",
    "UnknownTargetError",
    "VideoFormat",
    "option",
]
