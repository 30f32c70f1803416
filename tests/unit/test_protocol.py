"""The control protocol: valid round trips, and garbage that must become an error, never a crash."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mediaengine.control import protocol as proto
from mediaengine.sdk.errors import (
    ERRORS_BY_CODE,
    EngineError,
    FieldError,
    MalformedMessageError,
    ProtocolError,
    UnknownTypeError,
    error_from_wire,
)


def test_round_trip_of_every_type_with_its_required_fields() -> None:
    samples = {str: "x", int: 7, dict: {}, float: 1.5}
    for mtype, fields in proto.SCHEMAS.items():
        body = {name: samples[types[0]] for name, types in fields.items()}
        msg = proto.decode(proto.encode(mtype, **body))
        assert msg["type"] == mtype and msg["v"] == proto.VERSION


def test_unknown_fields_are_ignored() -> None:
    msg = proto.decode(proto.encode("ping", id=3, colour="blue"))
    assert msg["id"] == 3


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", MalformedMessageError),
        (b"\xc1", MalformedMessageError),
        (msgpack.packb([1, 2, 3]), MalformedMessageError),
        (msgpack.packb({"type": "ping", "id": 1}), FieldError),  # no version
        (msgpack.packb({"v": 99, "type": "ping", "id": 1}), FieldError),
        (msgpack.packb({"v": 1, "type": 5, "id": 1}), FieldError),
        (msgpack.packb({"v": 1, "type": "launch_rockets", "id": 1}), UnknownTypeError),
        (msgpack.packb({"v": 1, "type": "command", "id": 1, "node": "x", "command": "y"}), FieldError),
        (msgpack.packb({"v": 1, "type": "command", "id": "1", "node": "x", "command": "y", "args": {}}),
         FieldError),
        (msgpack.packb({"v": 1, "type": "ping", "id": True}), FieldError),
        (b"\x00" * (proto.MAX_MESSAGE_BYTES + 1), MalformedMessageError),
    ],
)
def test_malformed_messages_raise_typed_errors(raw: bytes, error: type[ProtocolError]) -> None:
    with pytest.raises(error) as info:
        proto.decode(raw)
    wire = info.value.to_wire()
    assert wire["code"] == error.code and wire["message"]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=256))
def test_random_bytes_never_escape_as_anything_but_protocol_errors(raw: bytes) -> None:
    try:
        proto.decode(raw)
    except ProtocolError:
        pass


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "type", "id", "node", "command", "args", "x"]), json_like,
                       max_size=6))
def test_random_maps_never_escape_as_anything_but_protocol_errors(body: dict[str, object]) -> None:
    raw = msgpack.packb(body, use_bin_type=True)
    try:
        msg = proto.decode(raw)
    except ProtocolError:
        return
    assert msg["type"] in proto.SCHEMAS
    assert isinstance(proto.request_id(raw), int)


def test_error_reply_rebuilds_the_typed_exception() -> None:
    for code, cls in ERRORS_BY_CODE.items():
        err = error_from_wire(proto.decode(proto.error(4, cls("boom")))) if code else None
        assert isinstance(err, cls)
        assert err.code == code
    assert type(error_from_wire({"code": 1499, "message": "?"})) is ProtocolError
    assert type(error_from_wire({"code": "x"})) is EngineError


def test_error_codes_are_unique_and_grouped_by_hundreds() -> None:
    codes = [c.code for c in ERRORS_BY_CODE.values()]
    assert len(codes) == len(set(codes))
    for cls in ERRORS_BY_CODE.values():
        for base in cls.__mro__[1:]:
            if isinstance(base, type) and issubclass(base, EngineError) and base is not EngineError:
                assert cls.code // 100 == base.code // 100
