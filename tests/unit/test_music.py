"""The `music` actor in-process (ActorHarness) on a real file of numbered beeps: start, pause, resume, seek,
loop, completion and bad files, each checked against the events and against the audio it emits."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from mediaengine.actors.music import Music
from mediaengine.sdk.errors import FieldError
from mediaengine.testing import ActorHarness, ManualClock

from tests.audiocheck import beeps_heard, write_beeps

RATE = 48000
TICK = 20_000_000


class Player:
    """A harness plus its clock, ticking every 20 ms like the runtime."""

    def __init__(self, **options: object) -> None:
        self.clock = ManualClock()
        self.h = ActorHarness(Music, {"rate": RATE, "channels": 1, **options}, node_id="music", clock=self.clock)
        self.t = 0

    def play_for(self, seconds: float) -> None:
        end = self.t + round(seconds * 1e9)
        while self.t < end:
            self.t += TICK
            self.h.tick(self.t)

    def audio(self) -> np.ndarray:
        frames = self.h.emitted("out")
        assert [f.seq for f in frames] == list(range(frames[0].seq, frames[0].seq + len(frames)))  # no gap
        return np.concatenate([f.data[:, 0] for f in frames]).astype(np.float32) / 32768

    def names(self) -> list[str]:
        return [e.name for e in self.h.events() if e.name != "music_progress"]


@pytest.fixture
def beeps(tmp_path: Path) -> Path:
    path = tmp_path / "beeps.wav"
    assert write_beeps(path, 6) == 3.0  # beeps 0..5, one every 0.5 s
    return path


def test_plays_in_order_pauses_silently_resumes_and_completes(beeps: Path) -> None:
    p = Player(path=str(beeps))
    p.play_for(1.2)  # beeps 0, 1, 2 started
    assert p.h.control("pause")["state"] == "paused"
    p.play_for(1.0)
    assert p.h.control("resume")["state"] == "playing"
    p.play_for(2.5)  # the rest (1.8 s) then silence
    x = p.audio()
    heard = beeps_heard(x, RATE, 6)
    assert [i for _, i in heard] == [0, 1, 2, 3, 4, 5]  # in order, none twice
    assert not np.abs(x[round(1.25 * RATE):round(2.2 * RATE)]).max() > 0  # the pause: digital silence
    gap = heard[3][0] - heard[2][0]
    assert gap == pytest.approx(0.5 + 1.0, abs=0.05)  # the pause moved the rest later by its length
    assert p.names() == ["music_started", "music_paused", "music_resumed", "music_completed"]
    progress = [e.data for e in p.h.events("music_progress")]
    assert progress[0]["duration_s"] == 3.0 and len(progress) >= 3
    assert all(b["position_s"] > a["position_s"] for a, b in itertools.pairwise(progress))
    assert p.h.control("status")["state"] == "idle"


def test_seek_and_loop(beeps: Path) -> None:
    p = Player(path=str(beeps), loop=True)
    p.play_for(0.4)  # beep 0
    assert p.h.control("seek", s=2.0)["position_s"] == 2.0  # to beep 4
    p.play_for(1.0 + 1.2)  # beeps 4, 5, then the loop: 0, 1, 2
    heard = [i for _, i in beeps_heard(p.audio(), RATE, 6)]
    assert heard == [0, 4, 5, 0, 1, 2]  # a beep twice only through the loop
    assert p.names() == ["music_started", "music_seeked", "music_looped"]
    assert p.h.set(loop=False) == {"loop": False}
    p.play_for(2.0)
    assert "music_completed" in p.names()
    with pytest.raises(FieldError, match="seek: no music is loaded"):
        p.h.control("seek", s=1)


def test_a_missing_or_corrupt_file_is_an_event_and_the_stream_goes_on(tmp_path: Path, beeps: Path) -> None:
    p = Player(path=str(tmp_path / "nope.mp3"))
    p.play_for(0.2)
    (err,) = p.h.events("music_error")
    assert err.data["code"] == 1301 and "does not exist" in err.data["message"]
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"this is not audio" * 100)
    p.h.control("start", path=str(bad))
    p.play_for(0.2)
    errors = p.h.events("music_error")
    assert len(errors) == 2 and errors[1].data["code"] == 1210, errors[1].data
    p.h.control("start", path=str(beeps))  # and it still plays what is good
    p.play_for(0.6)
    assert [i for _, i in beeps_heard(p.audio(), RATE, 6)] == [0, 1]
    assert len(p.h.emitted("out")) == 50  # a frame every 20 ms all along, silent while in error
