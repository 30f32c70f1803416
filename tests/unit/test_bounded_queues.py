"""Command queues of nodes are bounded and say so with a code: `snapshot` requests waiting for the next
frame (a paused source lets them pile up, then one frame writes them all in one hook) and
`send_message` texts waiting to go out in the video (QueueFullError, 1420)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mediaengine.actors import snapshot
from mediaengine.actors.rtmp_sender import MAX_PENDING_MESSAGES, RtmpSender, RtmpSenderOptions
from mediaengine.sdk.errors import QueueFullError
from mediaengine.sdk.formats import AAC, H264, VideoFormat


def test_snapshot_requests_waiting_for_a_frame_are_bounded(tmp_path: Path) -> None:
    actor = snapshot.Snapshot(snapshot.SnapshotOptions(path=str(tmp_path / "s.png")),
                              input_formats={"in": VideoFormat(64, 48, 30.0)})
    actor.setup()
    for i in range(snapshot.MAX_PENDING):
        actor.on_control("snapshot", {"path": str(tmp_path / f"{i}.png")})
    actor.on_control("snapshot", {"path": str(tmp_path / "0.png")})  # already waiting: no new entry
    with pytest.raises(QueueFullError, match="already wait for the next frame") as info:
        actor.on_control("snapshot", {"path": str(tmp_path / "one-too-many.png")})
    assert info.value.code == 1420


def test_send_message_requests_waiting_to_go_out_are_bounded() -> None:
    sender = RtmpSender(RtmpSenderOptions(url="rtmp://127.0.0.1:1935/live/k"), node_id="push",
                        input_formats={"video": H264, "audio": AAC})
    for i in range(MAX_PENDING_MESSAGES):
        assert sender.on_control("send_message", {"text": f"q{i}", "delay_ms": 60_000})["id"] == i + 1
    with pytest.raises(QueueFullError, match="already waiting") as info:
        sender.on_control("send_message", {"text": "one too many"})
    assert info.value.code == 1420
