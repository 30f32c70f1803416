"""H.264 SEI "user data unregistered" messages: build them into access units and read them back.

Live Q&A (a question, a poll, a caption) travels inside the video itself: an SEI NAL unit
(`nal_unit_type` 6) holding one `user_data_unregistered` message (payloadType 5): a 16-byte UUID that
says whose data it is, then the payload bytes.  Players that do not know the UUID ignore it; ours
read it back frame-accurately, through any server that relays H.264 untouched (RTMP, FLV, HLS).

    build_sei_nal(payload, uuid=OUR_UUID) -> bytes         Annex B NAL unit, start code included
    insert_sei(access_unit, sei_nals) -> bytes             before the first picture slice
    parse_sei_payloads(data) -> [(uuid, payload), ...]     Annex B or 4-byte-length AVCC input
    iter_nal_units(data) -> [nal, ...]                      the NAL units, start codes/lengths removed

Bit-level layout (ITU-T H.264 7.3.2.3 and D.1)::

    00 00 00 01                      start code (Annex B)
    06                               forbidden_zero_bit 0, nal_ref_idc 0, nal_unit_type 6
    05                               payloadType 5, coded as 0xFF* + last byte
    FF .. FF xx                      payloadSize = 16 + len(payload), same coding (sizes > 254)
    <16-byte UUID> <payload>
    80                               rbsp_trailing_bits: stop bit + alignment zeros

with emulation prevention over everything after the NAL header: inside the NAL, any `00 00` followed
by a byte <= 0x03 gets a 0x03 inserted, so the payload can hold any bytes (e.g. `00 00 01`) without
faking a start code.  `parse_sei_payloads` removes them again, so payloads round-trip byte-exact.

The FLV muxer converts Annex B access units to AVCC (length-prefixed) itself, so an Annex B SEI
inserted into an encoder packet reaches RTMP viewers as a normal AVCC NAL unit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "OUR_UUID",
    "USER_DATA_UNREGISTERED",
    "X264_UUID",
    "build_sei_nal",
    "escape_rbsp",
    "insert_sei",
    "iter_nal_units",
    "parse_sei_payloads",
    "unescape_rbsp",
]

#: mediaengine's own UUID for live Q&A messages (uuid5 of "mediaengine:sei:live-qa" in the URL namespace)
OUR_UUID = bytes.fromhex("ba1c3e09a64a5765bf19d9e939d9bdf0")
#: x264's encoder-information SEI ("x264 - core ... options: ..."), in the first keyframe of each encoder
X264_UUID = bytes.fromhex("dc45e9bde6d948b7962cd820d923eeef")
USER_DATA_UNREGISTERED = 5
NAL_SEI = 6
START_CODE = b"\x00\x00\x00\x01"
VCL_TYPES = frozenset(range(1, 6))  # coded slices (non-IDR, partitions A-C, IDR)


_NEEDS_ESCAPE = re.compile(rb"\x00\x00(?=[\x00-\x03])")
_FF_RUN = re.compile(rb"\xff*")
#: at most this many SEI messages are read from one access unit (the rest is network noise)
MAX_MESSAGES_PER_ACCESS_UNIT = 64


def escape_rbsp(rbsp: bytes) -> bytes:
    """Insert emulation-prevention bytes: `00 00 0x` (x <= 3) becomes `00 00 03 0x` (one regex pass in C:
    these functions see network data, a per-byte Python loop would let one large NAL stall a reader)."""
    return _NEEDS_ESCAPE.sub(b"\x00\x00\x03", bytes(rbsp))


def unescape_rbsp(ebsp: bytes) -> bytes:
    """Remove emulation-prevention bytes: every 0x03 that follows `00 00`."""
    return bytes(ebsp).replace(b"\x00\x00\x03", b"\x00\x00")  # left to right, non-overlapping: as H.264 reads it


def _ff_coded(value: int) -> bytes:
    """SEI payloadType/payloadSize coding: as many 0xFF as fit, then the remainder."""
    return b"\xff" * (value // 255) + bytes([value % 255])


def build_sei_nal(payload: bytes, uuid: bytes = OUR_UUID) -> bytes:
    """An Annex B SEI NAL unit (4-byte start code) with one user_data_unregistered message."""
    if len(uuid) != 16:
        raise ValueError(f"an SEI UUID has 16 bytes, got {len(uuid)}")
    body = bytes(uuid) + bytes(payload)
    rbsp = _ff_coded(USER_DATA_UNREGISTERED) + _ff_coded(len(body)) + body + b"\x80"
    return START_CODE + bytes([NAL_SEI]) + escape_rbsp(rbsp)


def _annexb_units(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each NAL unit in Annex B data (start codes and trailing zero bytes excluded)."""
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    units = []
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        if data[end - 1:end] == b"\x00":  # the zero byte of a 4-byte start code / trailing_zero_8bits
            end = s + len(data[s:end].rstrip(b"\x00"))
        if end > s:
            units.append((s, end))
    return units


def _avcc_units(data: bytes, length_size: int = 4) -> list[tuple[int, int]] | None:
    """(start, end) of each NAL unit in length-prefixed data, or None if the lengths do not add up."""
    units = []
    pos = 0
    while pos < len(data):
        if pos + length_size > len(data):
            return None
        n = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        if n == 0 or pos + n > len(data):
            return None
        units.append((pos, pos + n))
        pos += n
    return units


def _is_annexb(data: bytes) -> bool:
    return data.startswith(b"\x00\x00\x01") or data.startswith(b"\x00\x00\x00\x01")


def iter_nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an access unit, 4-byte-length AVCC or Annex B.

    AVCC is tried first and taken when its lengths cover the data exactly and every unit has a valid
    header (a 256..511-byte first unit starts `00 00 01`, like an Annex B start code); otherwise the
    data is split at start codes.
    """
    data = bytes(data)
    spans = _avcc_units(data)
    if spans is None or any(data[s] & 0x80 for s, _ in spans):
        spans = _annexb_units(data)
    return [data[s:e] for s, e in spans]



def _read_ff_coded(rbsp: bytes, pos: int) -> tuple[int, int] | None:
    """An SEI payload type or size (0xFF bytes add 255 each, then one final byte) at `pos`:
    (value, position after it), or None when the data ends first."""
    run = _FF_RUN.match(rbsp, pos)
    assert run is not None  # `\xff*` matches the empty string too
    value, pos = 255 * (run.end() - pos), run.end()
    if pos >= len(rbsp):
        return None
    return value + rbsp[pos], pos + 1


def _sei_messages(rbsp: bytes) -> Iterable[tuple[int, bytes]]:
    """(payloadType, payload) of each SEI message in an SEI RBSP (NAL header already removed)."""
    pos = 0
    n = len(rbsp)
    while pos < n:
        if pos + 2 > n:  # rbsp_trailing_bits (or nothing left worth reading)
            return
        ptype_at = _read_ff_coded(rbsp, pos)
        if ptype_at is None:
            return
        ptype, pos = ptype_at
        size_at = _read_ff_coded(rbsp, pos)
        if size_at is None:
            return
        size, pos = size_at
        if pos + size > n:
            return  # truncated message: stop rather than guess
        yield ptype, rbsp[pos:pos + size]
        pos += size


def parse_sei_payloads(data: bytes) -> list[tuple[bytes, bytes]]:
    """(uuid, payload) of every user_data_unregistered SEI message in an access unit.

    `data` is Annex B (start codes) or AVCC with 4-byte lengths, as FLV/MP4 demuxers return it.
    Emulation-prevention bytes are removed, so payloads come back exactly as they were built.
    """
    found: list[tuple[bytes, bytes]] = []
    seen = 0
    for nal in iter_nal_units(data):
        if not nal or nal[0] & 0x1F != NAL_SEI:
            continue
        for ptype, body in _sei_messages(unescape_rbsp(nal[1:])):
            seen += 1
            if seen > MAX_MESSAGES_PER_ACCESS_UNIT:
                return found
            if ptype == USER_DATA_UNREGISTERED and len(body) >= 16:
                found.append((body[:16], body[16:]))
    return found


def insert_sei(access_unit: bytes, sei_nals: bytes) -> bytes:
    """`access_unit` (Annex B) with `sei_nals` (Annex B, start codes included) placed right before its
    first picture slice, after any AUD/SPS/PPS/SEI that precede it, as H.264 orders NAL units.

    Without a recognisable slice the SEI goes first.
    """
    if not sei_nals:
        return bytes(access_unit)
    data = bytes(access_unit)
    if _is_annexb(data):
        for start, _end in _annexb_units(data):
            if data[start] & 0x1F in VCL_TYPES:
                cut = start - 3
                if cut > 0 and data[cut - 1] == 0:  # 4-byte start code
                    cut -= 1
                return data[:cut] + bytes(sei_nals) + data[cut:]
    return bytes(sei_nals) + data
