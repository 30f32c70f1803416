"""The actor runtime's side of a format change, in-process: a real ring, a real PULL socket as the consumer.

`ChangeFormat` is checked (kind, slot size), written into the ring header before the descriptor goes out,
and the frames after it go out with the new shape; a live `set` beyond the ring is refused before it
applies.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from mediaengine.actors.test_pattern import TestPattern, TestPatternOptions
from mediaengine.runtime.actor_runtime import ActorRuntime, ring_format
from mediaengine.runtime.ring import FrameRing, segment_name, unlink_segments
from mediaengine.runtime.spec import ActorSpec, ConsumerSpec, OutputSpec
from mediaengine.runtime.wire import FormatDesc, FrameDesc, decode_desc
from mediaengine.sdk.errors import FormatChangeError, OptionError, SlotTooSmallError
from mediaengine.sdk.formats import AudioFormat, Frame, VideoFormat, format_to_wire

SMALL = VideoFormat(640, 360, 30.0, max_width=1280, max_height=720)
BIG = VideoFormat(1280, 720, 30.0, max_width=1280, max_height=720)


@dataclasses.dataclass
class Rig:
    runtime: ActorRuntime
    consumer: zmq.Socket[bytes]
    ring: FrameRing

    def received(self) -> FormatDesc | FrameDesc:
        assert self.consumer.poll(2000), "nothing arrived at the consumer"
        d = decode_desc(self.consumer.recv())
        assert isinstance(d, FormatDesc | FrameDesc)
        return d


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    engine_id = f"t{uuid.uuid4().hex[:16]}"
    ring = FrameRing.create(segment_name(engine_id, "src", "out"), slot_bytes=SMALL.slot_bytes, consumers=1,
                            depth=4, format_info=msgpack.packb(format_to_wire(SMALL)))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    consumer = ctx.socket(zmq.PULL)
    endpoint = f"ipc://{tmp_path}/data-filt.sock"
    consumer.bind(endpoint)
    spec = ActorSpec(engine_id=engine_id, node="src", kind="test_pattern", options={},
                     control=f"ipc://{tmp_path}/control.sock", data_endpoint=f"ipc://{tmp_path}/data-src.sock",
                     epoch_ns=time.monotonic_ns(), heartbeat_interval_s=0.2,
                     outputs={"out": OutputSpec(SMALL, ring.name,
                                                (ConsumerSpec("filt", "in", 0, "drop_oldest", endpoint),))})
    runtime = ActorRuntime(spec)
    try:
        runtime._open()
        runtime.out_formats["out"] = SMALL
        runtime.actor = TestPattern(TestPatternOptions(max_width=1280, max_height=720))
        yield Rig(runtime, consumer, ring)
    finally:
        runtime.close()
        consumer.close(0)
        ctx.term()
        ring.close()
        unlink_segments(engine_id)


def test_a_format_change_goes_into_the_ring_header_then_down_the_edge_before_the_frames(rig: Rig) -> None:
    rt = rig.runtime
    assert ring_format(rig.ring, BIG) == SMALL
    rt._emit("out", Frame(np.zeros((360, 640, 3), np.uint8), pts_ns=0))  # a 640x360 frame first
    first = rig.received()
    assert isinstance(first, FrameDesc)

    rt._change_format("out", BIG)
    assert ring_format(rig.ring, SMALL) == BIG  # a consumer attaching now reads the new size
    assert rig.received() == FormatDesc("in", BIG)
    assert rt.outputs["out"].fmt == BIG and rt.out_formats["out"] == BIG
    rt._emit("out", Frame(np.zeros((720, 1280, 3), np.uint8), pts_ns=1))
    frame = rig.received()
    assert isinstance(frame, FrameDesc) and rig.ring.slot_nbytes(frame.slot) == BIG.frame_bytes

    rt._change_format("out", BIG)  # no change: nothing is sent
    assert not rig.consumer.poll(50)


def test_a_change_beyond_the_slots_or_to_another_kind_is_refused(rig: Rig) -> None:
    rt = rig.runtime
    with pytest.raises(SlotTooSmallError, match="max_width/max_height") as info:
        rt._change_format("out", VideoFormat(1920, 1080, 30.0))
    assert info.value.code == 1203
    with pytest.raises(FormatChangeError, match="media kind"):
        rt._change_format("out", AudioFormat(48000, 2))
    assert rt.outputs["out"].fmt == SMALL and ring_format(rig.ring, BIG) == SMALL
    assert not rig.consumer.poll(50)


def test_a_live_set_beyond_the_declared_maximum_or_the_ring_is_refused_before_it_applies(rig: Rig) -> None:
    rt = rig.runtime
    assert rt.actor is not None
    with pytest.raises(OptionError, match="exceeds max_width"):
        rt._set_options({"width": 1920, "height": 1080})
    rt.actor.options = TestPatternOptions()  # no maximum declared: only the ring's slots bound it
    with pytest.raises(OptionError, match="bytes per frame"):
        rt._set_options({"width": 2560, "height": 1440})
    assert (rt.actor.options.width, rt.actor.options.height) == (640, 360)
    assert rt._set_options({"width": 1280, "height": 720}) == {"width": 1280, "height": 720}
