"""mediaengine: a live-streaming ingest engine.

Actors run as OS processes, raw frames travel over shared-memory rings, control, heartbeats, events
and metrics over ZeroMQ + msgpack, and a supervisor restarts whatever fails.  This package re-exports
the small public API; the layers live in subpackages: `sdk` (what actors import), `topology`,
`runtime`, `supervision`, `control` (protocol, client, Python API, event subscriptions) and `cli`.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .control.api import AsyncEngine, Engine
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

# Where each public name lives.  Every name is loaded on first use: `import mediaengine` itself costs
# nothing, so the command line (`mediaengine ps` imports only the control client) does not pay for numpy,
# and actor processes do not pay for the Python API's asyncio and zmq.asyncio.
_HOME = {
    **dict.fromkeys(("AsyncEngine", "Engine"), ".control.api"),
    **dict.fromkeys(("Actor", "Context", "Emit", "EndOfStream", "Event", "Finish", "InPort", "OutPort", "Reply",
                     "option"), ".sdk.actor"),
    **dict.fromkeys(("EngineError", "FormatError", "NotAllowedError", "OptionError", "ProtocolError",
                     "ResourceError", "SupervisorError", "TopologyError", "UnknownCommandError",
                     "UnknownTargetError"), ".sdk.errors"),
    **dict.fromkeys(("AAC", "H264", "AudioFormat", "EncodedFormat", "Frame", "Packet", "VideoFormat"),
                    ".sdk.formats"),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'mediaengine' has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value  # once loaded, a plain module attribute
    return value


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
