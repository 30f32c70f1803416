"""Data-plane descriptors: the small msgpack messages that cross between actors.

Raw frames stay in their ring slot; the descriptor names the slot.  Encoded packets are small enough
to travel inline.  One PULL socket per consumer node receives all of them; `p` names the input pad.

    {"p": pad, "s": slot, "q": seq, "t": pts_ns, "m": meta}   a raw frame in the pad's ring
    {"p": pad, "k": packet}                                    an inline encoded packet
    {"p": pad, "e": 1}                                         end of stream on that pad
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import msgpack

from ..sdk.errors import FormatError
from ..sdk.formats import Packet


def frame_desc(pad: str, slot: int, seq: int, pts_ns: int, meta: dict[str, Any]) -> bytes:
    return msgpack.packb({"p": pad, "s": slot, "q": seq, "t": pts_ns, "m": meta}, use_bin_type=True)  # type: ignore[no-any-return]


def packet_desc(pad: str, packet: Packet) -> bytes:
    return msgpack.packb({"p": pad, "k": packet_to_wire(packet)}, use_bin_type=True)  # type: ignore[no-any-return]


def eos_desc(pad: str) -> bytes:
    return msgpack.packb({"p": pad, "e": 1}, use_bin_type=True)  # type: ignore[no-any-return]


def decode_desc(raw: bytes) -> dict[str, Any]:
    msg = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    if not isinstance(msg, dict) or not isinstance(msg.get("p"), str):
        raise ValueError("malformed descriptor")
    return msg


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


def packet_from_wire(d: dict[str, Any]) -> Packet:
    """Inverse of `packet_to_wire`, checking every field's type: a malformed dict raises FormatError,
    never a bare TypeError in the consumer."""
    try:
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
        raise FormatError(f"malformed packet on the wire: {e}") from e
