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

from ._formats import Packet


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
    num, den = d["tb"]
    return Packet(
        data=bytes(d["d"]),
        pts=int(d["pts"]),
        dts=int(d["dts"]),
        time_base=Fraction(int(num), int(den)),
        keyframe=bool(d["key"]),
        params=d.get("par"),
        meta=dict(d.get("m") or {}),
    )
