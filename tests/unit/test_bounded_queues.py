"""Command queues of nodes are bounded and say so with a code: `snapshot` requests waiting for the next
frame (a paused source lets them pile up, then one frame writes them all in one hook) and
`send_message` texts waiting to go out in the video (QueueFullError, 1420)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mediaengine.actors import snapshot
from mediaengine.actors.rtmp_sender import MAX_PENDING_MESSAGES, RtmpSender, RtmpSenderOptions
from mediaengine.sdk.actor import Reply
from mediaengine.sdk.errors import QueueFullError
from mediaengine.sdk.formats import VideoFormat
from mediaengine.testing import ActorHarness


def test_snapshot_requests_waiting_for_a_frame_are_bounded(tmp_path: Path) -> None:
    actor = ActorHarness(snapshot.Snapshot, {"path": str(tmp_path / "s.png")},
                         input_formats={"in": VideoFormat(64, 48, 30.0)}, output_dir=str(tmp_path))
    for i in range(snapshot.MAX_PENDING):
        actor.control("snapshot", path=str(tmp_path / f"{i}.png"))
    actor.control("snapshot", path=str(tmp_path / "0.png"))  # already waiting: no new entry
    with pytest.raises(QueueFullError, match="already wait for the next frame") as info:
        actor.control("snapshot", path=str(tmp_path / "one-too-many.png"))
    assert info.value.code == 1420


def test_send_message_requests_waiting_to_go_out_are_bounded() -> None:
    sender = RtmpSender(RtmpSenderOptions(url="rtmp://127.0.0.1:1935/live/k"))
    sender.kinds = ("video", "audio")  # as setup() sets them from linked inputs, without starting the link
    for i in range(MAX_PENDING_MESSAGES):
        reply = sender.on_control("send_message", {"text": f"q{i}", "delay_ms": 60_000})
        assert isinstance(reply, list) and isinstance(reply[0], Reply) and reply[0].value["id"] == i + 1
    with pytest.raises(QueueFullError, match="already waiting") as info:
        sender.on_control("send_message", {"text": "one too many"})
    assert info.value.code == 1420
