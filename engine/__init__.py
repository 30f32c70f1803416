"""mediaengine: a live-streaming ingest engine.

Actors run as OS processes, raw frames travel over shared-memory rings, control, heartbeats, events
and metrics over ZeroMQ + msgpack, and a supervisor restarts whatever fails.  This package re-exports
the small public API; internals live in private modules.
"""

from ._actor import Actor, Emit, EndOfStream, Event, Finish, InPort, OutPort
from ._errors import (
    EngineError,
    FormatError,
    ProtocolError,
    ResourceError,
    SupervisorError,
    TopologyError,
)
from ._formats import AAC, H264, AudioFormat, EncodedFormat, Frame, Packet, VideoFormat

__all__ = [
    "AAC",
    "H264",
    "Actor",
    "AudioFormat",
    "Emit",
    "EncodedFormat",
    "EndOfStream",
    "EngineError",
    "Event",
    "Finish",
    "FormatError",
    "Frame",
    "InPort",
    "OutPort",
    "Packet",
    "ProtocolError",
    "ResourceError",
    "SupervisorError",
    "TopologyError",
    "VideoFormat",
]
