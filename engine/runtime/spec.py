"""What the supervisor hands each actor process at start: one typed, picklable `ActorSpec`.

The supervisor builds it (`Supervisor._spec`) and passes it to `actor_main` through the fork server;
the runtime reads attributes, never string keys, so a field added or renamed on one side is a type
error on the other, not a KeyError in a child process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..sdk.formats import Format

#: comma-separated modules the fork server imports besides its own (runtime/preload.py): what the
#: kinds of the running topology declare in `Actor.preload`
PRELOAD_ENV = "MEDIAENGINE_KIND_PRELOAD"


@dataclass(frozen=True)
class ConsumerSpec:
    """One consumer of an output pad: where its descriptors go and which ring consumer index it has."""

    node: str
    pad: str  # the consumer's input pad
    index: int  # its consumer index in the producer's ring
    policy: str  # one of sdk.actor.POLICIES
    endpoint: str  # the consumer node's data (PULL) endpoint


@dataclass(frozen=True)
class OutputSpec:
    """An output pad: its format as the topology declared it, its ring (None for encoded) and consumers."""

    format: Format
    ring: str | None
    consumers: tuple[ConsumerSpec, ...] = ()


@dataclass(frozen=True)
class InputSpec:
    """An input pad: the format the topology declared, the producer's ring and our index in it."""

    format: Format
    ring: str | None
    index: int
    policy: str  # one of sdk.actor.POLICIES


@dataclass(frozen=True)
class ActorSpec:
    """Everything one actor process needs to start (see the module docstring)."""

    engine_id: str
    node: str
    kind: str
    options: Any  # the node's frozen Options instance, validated once by the loader
    control: str  # the supervisor's control ROUTER endpoint
    data_endpoint: str  # this node's data PULL endpoint (bound when it has inputs)
    epoch_ns: int  # the engine's time zero on the monotonic clock
    heartbeat_interval_s: float
    inputs: dict[str, InputSpec] = field(default_factory=dict)
    outputs: dict[str, OutputSpec] = field(default_factory=dict)
    restart_count: int = 0
    allow_faults: bool = False
    output_dir: str = "."  # where commands may write files (sdk/outputs.py)
    supervisor_pid: int = 0
    curve: dict[str, str] | None = None  # this run's actor keypair when control is a CURVE server
    block_timeout_s: float = 0.5  # how long a `block` edge waits for a slow consumer before dropping
