"""Data-plane descriptors: the small msgpack messages that cross between actors.

Raw frames stay in their ring slot; the descriptor names the slot.  Encoded packets are small enough
to travel inline.  One PULL socket per consumer node receives all of them, in the order each producer
sent them; `p` names the input pad.  The short keys stay on the wire; `decode_desc` checks them and
returns one of four dataclasses, so the runtime never reads a descriptor by string keys:

    {"p": pad, "s": slot, "q": seq, "t": pts_ns, "m": meta}   FrameDesc: a raw frame in the pad's ring
    {"p": pad, "k": packet}                                    PacketDesc: an inline encoded packet
    {"p": pad, "e": 1}                                         EosDesc: end of stream on that pad
    {"p": pad, "f": format}                                    FormatDesc: the frames that follow on
                                                               that pad have this format

A malformed descriptor raises `MalformedDescriptorError` (a FormatError), never KeyError/TypeError.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import msgpack

from ..sdk.errors import FormatError, MalformedDescriptorError
from ..sdk.formats import Format, Packet, format_from_wire, format_to_wire


@dataclass(frozen=True)
class FrameDesc:
    """A raw frame: (slot, seq) in the pad's ring, its pts and metadata."""

    pad: str
    slot: int
    seq: int
    pts_ns: int
    meta: dict[str, Any]


@dataclass(frozen=True)
class PacketDesc:
    """An encoded packet, carried inline."""

    pad: str
    packet: Packet


@dataclass(frozen=True)
class EosDesc:
    """The end of the stream on a pad."""

    pad: str


@dataclass(frozen=True)
class FormatDesc:
    """A format change: every frame after this descriptor on `pad` has format `fmt`."""

    pad: str
    fmt: Format


Desc = FrameDesc | PacketDesc | EosDesc | FormatDesc


def _pack(msg: dict[str, Any]) -> bytes:
    return msgpack.packb(msg, use_bin_type=True)  # type: ignore[no-any-return]


def frame_desc(pad: str, slot: int, seq: int, pts_ns: int, meta: dict[str, Any]) -> bytes:
    return _pack({"p": pad, "s": slot, "q": seq, "t": pts_ns, "m": meta})


def packet_desc(pad: str, packet: Packet) -> bytes:
    return _pack({"p": pad, "k": packet_to_wire(packet)})


def eos_desc(pad: str) -> bytes:
    return _pack({"p": pad, "e": 1})


def format_desc(pad: str, fmt: Format) -> bytes:
    return _pack({"p": pad, "f": format_to_wire(fmt)})


def _int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise MalformedDescriptorError(f"descriptor field {what} is {v!r}, not an integer")
    return v


def decode_desc(raw: bytes) -> Desc:
    """Decode and check one descriptor (see the module docstring for the four shapes)."""
    try:
        msg = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (msgpack.UnpackException, ValueError, TypeError) as e:
        raise MalformedDescriptorError(f"descriptor is not msgpack: {e}") from e
    if not isinstance(msg, dict) or not isinstance(msg.get("p"), str):
        raise MalformedDescriptorError("descriptor is not a map with a string pad `p`")
    pad: str = msg["p"]
    if "s" in msg:
        meta = msg.get("m") or {}
        if not isinstance(meta, dict):
            raise MalformedDescriptorError(f"frame metadata on {pad!r} is not a map")
        return FrameDesc(pad, _int(msg["s"], "s (slot)"), _int(msg.get("q"), "q (seq)"),
                         _int(msg.get("t"), "t (pts_ns)"), meta)
    if "k" in msg:
        return PacketDesc(pad, packet_from_wire(msg["k"]))
    if msg.get("e"):
        return EosDesc(pad)
    if "f" in msg:
        try:
            return FormatDesc(pad, format_from_wire(msg["f"]))
        except FormatError as e:
            raise MalformedDescriptorError(f"format change on {pad!r}: {e}") from e
    raise MalformedDescriptorError(f"descriptor on {pad!r} is none of frame, packet, eos, format")


def packet_to_wire(p: Packet) -> dict[str, Any]:
    return {
        "d": p.data,
        "pts": p.pts,
        "dts": p.dts,
        "tb": [p.time_base.numerator, p.time_base.denominator],
        "key": p.keyframe,
        "par": p.params,
        "m": p.meta,
    }


def packet_from_wire(d: Any) -> Packet:
    """Inverse of `packet_to_wire`, checking every field's type: a malformed dict raises
    MalformedDescriptorError (a FormatError), never a bare KeyError/TypeError in the consumer."""
    try:
        if not isinstance(d, dict):
            raise TypeError(f"packet is {type(d).__name__}, not a map")
        data, params, meta = d["d"], d.get("par"), d.get("m")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data is {type(data).__name__}, not bytes")
        if params is not None and not isinstance(params, dict):
            raise TypeError("params must be a map")
        if meta is not None and not isinstance(meta, dict):
            raise TypeError("meta must be a map")
        ints = (d["pts"], d["dts"], *d["tb"])
        if len(ints) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
            raise TypeError("pts, dts and tb [num, den] must be integers")
        return Packet(
            data=bytes(data),
            pts=int(d["pts"]),
            dts=int(d["dts"]),
            time_base=Fraction(int(ints[2]), int(ints[3])),
            keyframe=bool(d["key"]),
            params=params,
            meta=dict(meta or {}),
        )
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise MalformedDescriptorError(f"malformed packet on the wire: {e}") from e
