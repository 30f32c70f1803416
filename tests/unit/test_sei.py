"""mediaengine.sdk.sei: SEI user_data_unregistered NAL units built, inserted and parsed back byte-exact."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mediaengine.sdk.sei import (
    OUR_UUID,
    build_sei_nal,
    escape_rbsp,
    insert_sei,
    iter_nal_units,
    parse_sei_payloads,
    unescape_rbsp,
)

# payloads that need emulation prevention, sizes around the 255-byte size-coding step, odd bytes
TRICKY = [
    b"",
    b"hello",
    b"\x00\x00\x01",
    b"\x00\x00\x03",
    b"\x00\x00\x00",
    b"\x00\x00\x02\x00\x00\x01\x00\x00",
    b"\x00" * 64,
    b"\x03\x00\x00\x03\x03",
    bytes(range(256)),
    b"q" * 238,  # body (16 + payload) = 254: one size byte
    b"q" * 239,  # body = 255: size coded FF 00
    b"q" * 240,  # body = 256: size coded FF 01
    b"\x00\x00\x01" * 400,  # 1200 bytes: FF FF FF FF xx, and emulation prevention all along
    "你好, live Q&A? ✓".encode(),
]


def to_avcc(annexb: bytes) -> bytes:
    """Annex B -> 4-byte-length AVCC, as the FLV muxer does."""
    return b"".join(len(n).to_bytes(4, "big") + n for n in iter_nal_units(annexb))


def test_known_bytes_for_a_small_payload() -> None:
    nal = build_sei_nal(b"hi")
    # start code, NAL header (type 6), payloadType 5, payloadSize 18, UUID, payload, trailing bits
    assert nal == b"\x00\x00\x00\x01\x06\x05\x12" + OUR_UUID + b"hi\x80"


def test_size_coding_above_254() -> None:
    nal = build_sei_nal(b"q" * 240)  # body 256 bytes
    assert nal[5:8] == b"\x05\xff\x01"
    nal = build_sei_nal(b"q" * 239)  # body 255 bytes
    assert nal[5:8] == b"\x05\xff\x00"


@pytest.mark.parametrize("payload", TRICKY, ids=[f"len{len(p)}-{p[:4].hex()}" for p in TRICKY])
def test_round_trip_annexb_and_avcc(payload: bytes) -> None:
    nal = build_sei_nal(payload)
    body = nal[4:]
    # no start code may appear inside the NAL unit, whatever the payload
    assert b"\x00\x00\x01" not in body and b"\x00\x00\x00" not in body and b"\x00\x00\x02" not in body
    assert parse_sei_payloads(nal) == [(OUR_UUID, payload)]
    assert parse_sei_payloads(to_avcc(nal)) == [(OUR_UUID, payload)]


def test_emulation_prevention_is_inserted_where_needed() -> None:
    nal = build_sei_nal(b"\x00\x00\x01")
    assert nal.endswith(b"\x00\x00\x03\x01\x80")
    assert escape_rbsp(b"\x00\x00\x00\x00") == b"\x00\x00\x03\x00\x00"  # zeros counted again after the 03
    assert escape_rbsp(b"\x00" * 5) == b"\x00\x00\x03\x00\x00\x03\x00"
    assert escape_rbsp(b"\x00\x00\x04") == b"\x00\x00\x04"
    assert unescape_rbsp(escape_rbsp(b"\x00\x00\x03\x00\x00\x02")) == b"\x00\x00\x03\x00\x00\x02"


@given(st.binary(max_size=700))
def test_round_trip_any_bytes(payload: bytes) -> None:
    nal = build_sei_nal(payload)
    assert parse_sei_payloads(nal) == [(OUR_UUID, payload)]
    assert parse_sei_payloads(to_avcc(nal)) == [(OUR_UUID, payload)]


def test_other_uuid_and_several_messages() -> None:
    other = bytes(range(16))
    au = build_sei_nal(b"one") + build_sei_nal(b"two", uuid=other) + b"\x00\x00\x00\x01\x65\x88\x84"
    assert parse_sei_payloads(au) == [(OUR_UUID, b"one"), (other, b"two")]
    with pytest.raises(ValueError, match="16 bytes"):
        build_sei_nal(b"x", uuid=b"short")


def test_avcc_first_unit_of_256_to_511_bytes_is_not_mistaken_for_annexb() -> None:
    nal = build_sei_nal(b"z" * 300)[4:]  # 1 + 1 + 2 + 16 + 300 + 1 = 321 bytes: length 00 00 01 41
    avcc = len(nal).to_bytes(4, "big") + nal + (3).to_bytes(4, "big") + b"\x41\x9a\x02"
    assert avcc.startswith(b"\x00\x00\x01")
    assert parse_sei_payloads(avcc) == [(OUR_UUID, b"z" * 300)]
    assert [n[0] & 0x1F for n in iter_nal_units(avcc)] == [6, 1]


def test_insert_goes_after_parameter_sets_before_the_first_slice() -> None:
    sps, pps, idr, p2 = b"\x67\x42\x00\x1e", b"\x68\xce\x38\x80", b"\x65\x88\x84\x00\x10", b"\x65\x00\x11"
    au = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps + b"\x00\x00\x01" + idr + b"\x00\x00\x01" + p2
    out = insert_sei(au, build_sei_nal(b"msg"))
    assert [n[0] & 0x1F for n in iter_nal_units(out)] == [7, 8, 6, 5, 5]
    assert out.startswith(au[:16])
    assert out.endswith(b"\x00\x00\x01" + idr + b"\x00\x00\x01" + p2)
    assert parse_sei_payloads(out) == [(OUR_UUID, b"msg")]
    assert insert_sei(au, b"") == au
    assert insert_sei(b"\x01\x02", build_sei_nal(b"m")).startswith(b"\x00\x00\x00\x01\x06")


def test_ffmpegs_h264_decoder_reads_our_sei_from_a_libx264_stream() -> None:
    enc = av.CodecContext.create("libx264", "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt, enc.time_base = 64, 64, "yuv420p", Fraction(1, 30)
    enc.options = {"tune": "zerolatency", "preset": "ultrafast"}
    enc.open()
    dec = av.CodecContext.create("h264", "r")
    sent, seen = [], []
    for i in range(6):
        frame = av.VideoFrame(64, 64, "yuv420p")
        frame.pts = i
        for pkt in enc.encode(frame):
            payload = b"\x00\x00\x01 frame " + bytes([i])
            sent.append(payload)
            data = insert_sei(bytes(pkt), build_sei_nal(payload))
            ours = [p for u, p in parse_sei_payloads(data) if u == OUR_UUID]
            assert ours == [payload]
            out = av.Packet(data)
            out.pts, out.dts = pkt.pts, pkt.dts
            for decoded in dec.decode(out):
                side_data: Any = decoded.side_data  # PyAV's stubs type it as a TypedDict
                for sd in side_data:
                    raw = bytes(sd)
                    if raw[:16] == OUR_UUID:
                        seen.append(raw[16:])
    assert sent and seen == sent
