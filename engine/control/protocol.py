"""The control-plane wire format: msgpack maps with a type tag and a protocol version.

Every message is a msgpack map ``{"v": 1, "type": <str>, ...}``.  Requests carry an integer ``id``
that the reply echoes.  Replies are ``{"type": "ok", "id", "result"}`` or
``{"type": "error", "id", "code", "name", "message"}`` with a code from `mediaengine.sdk.errors`.

Unknown fields are ignored; unknown types, wrong field types, oversized or malformed messages raise a
`ProtocolError` subclass from `decode`, which the receiver turns into an error reply (it never
crashes).  docs/protocol.md lists every type and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgpack

from ..sdk.errors import EngineError, FieldError, MalformedMessageError, UnknownTypeError

VERSION = 1
MAX_MESSAGE_BYTES = 1 << 20  # control messages are small; media never travels here
MAX_ERROR_TEXT = 2000  # characters of an error reply's message (it may quote a value a client sent)

# type -> required fields and their Python types (checked by `decode`)
_STR = (str,)
_INT = (int,)
_MAP = (dict,)
_NUM = (int, float)

SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    # actor -> supervisor
    "hello": {"node": _STR, "pid": _INT},
    "heartbeat": {"node": _STR},
    "metrics": {"node": _STR, "metrics": _MAP},
    "event": {"node": _STR, "name": _STR, "data": _MAP},
    "failed": {"node": _STR, "code": _INT, "message": _STR},
    "done": {"node": _STR, "reason": _STR},
    "configure": {"node": _STR, "target": _STR, "options": _MAP},  # set another node's live options
    # client -> supervisor, supervisor -> actor (requests, each with an id)
    "ps": {"id": _INT},
    "snapshot": {"id": _INT},
    "command": {"id": _INT, "node": _STR, "command": _STR, "args": _MAP},
    "set": {"id": _INT, "node": _STR, "options": _MAP},
    "stop": {"id": _INT},
    "fault": {"id": _INT, "node": _STR, "fault": _STR, "args": _MAP},
    "ping": {"id": _INT},
    # supervisor -> actor
    "shutdown": {},
    # replies
    "ok": {"id": _INT},
    "error": {"id": _INT, "code": _INT, "name": _STR, "message": _STR},
}

#: the one list of faults `fault` injects (the actor runtime performs them; API, CLI and docs read it)
FAULTS: tuple[str, ...] = ("kill", "hang", "crash", "slow", "exit", "corrupt")

REQUEST_TYPES = frozenset({"ps", "snapshot", "command", "set", "stop", "fault", "ping"})
# sent only by the engine's own actors, on their own authenticated socket (a client sending one gets
# ActorOnlyError); `ok`/`error` are their replies to forwarded requests
ACTOR_TYPES = frozenset({"hello", "heartbeat", "metrics", "event", "failed", "done", "ok", "error", "configure"})
RESERVED = ("v", "type")  # set by the encoder, never taken from a message's fields


def encode(msg_type: str, **fields: Any) -> bytes:
    """Pack one message from keyword fields (the engine's own messages; names are Python identifiers)."""
    return encode_map(msg_type, fields)


def encode_map(msg_type: str, fields: Mapping[Any, Any]) -> bytes:
    """Pack one message from a map, e.g. one received and forwarded.

    Its keys may be anything msgpack holds (ints, nil, bytes, names like `msg_type`): they are packed as
    they are, never passed as keyword arguments; `v` and `type` are always this engine's.
    """
    body: dict[Any, Any] = {"v": VERSION, "type": msg_type}
    for key, value in fields.items():
        if not (isinstance(key, str) and key in RESERVED):
            body[key] = value
    return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


def decode(raw: bytes) -> dict[str, Any]:
    """Unpack and validate one message, or raise a ProtocolError subclass saying what is wrong."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MalformedMessageError(f"message of {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        msg = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many unrelated types for garbage input
        raise MalformedMessageError(f"not a msgpack message ({type(exc).__name__})") from None
    if not isinstance(msg, dict):
        raise MalformedMessageError(f"a message must be a msgpack map, got {type(msg).__name__}")
    version = msg.get("v")
    if version != VERSION:
        raise FieldError(f"unsupported protocol version {version!r} (this engine speaks v{VERSION})")
    msg_type = msg.get("type")
    if not isinstance(msg_type, str):
        raise FieldError("field 'type' must be a string")
    schema = SCHEMAS.get(msg_type)
    if schema is None:
        raise UnknownTypeError(f"unknown message type {msg_type!r}; known: {', '.join(sorted(SCHEMAS))}")
    for name, types_ in schema.items():
        if name not in msg:
            raise FieldError(f"{msg_type}: missing field {name!r}")
        value = msg[name]
        if not isinstance(value, types_) or (types_ is _INT and isinstance(value, bool)):
            expected = "/".join(t.__name__ for t in types_)
            raise FieldError(f"{msg_type}.{name}: expected {expected}, got {type(value).__name__}")
    return msg


def request_id(raw: bytes) -> int:
    """Best-effort id of a (possibly invalid) request, so an error reply can still be matched."""
    try:
        msg = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:
        return 0
    if isinstance(msg, Mapping):
        rid = msg.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool) and -(2**63) <= rid < 2**64:
            return rid
    return 0


def ok(rid: int, result: Any = None) -> bytes:
    return encode("ok", id=rid, result=result)


def error(rid: int, err: EngineError) -> bytes:
    """An `error` reply; its message is cut to MAX_ERROR_TEXT characters (it may quote hostile input)."""
    wire = err.to_wire()
    text = str(wire["message"])
    if len(text) > MAX_ERROR_TEXT:
        text = f"{text[:MAX_ERROR_TEXT]}... ({len(text) - MAX_ERROR_TEXT} more characters)"
    return encode_map("error", {**wire, "id": rid, "message": text})
