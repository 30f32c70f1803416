"""The `music` actor in-process (ActorHarness) on a real file of numbered beeps: start, pause, resume, seek,
loop, completion and bad files, each checked against the events and against the audio it emits."""

from __future__ import annotations

import functools
import http.server
import itertools
import subprocess
import threading
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


# every container/codec the docstring promises, made by Debian's ffmpeg from the beeps in stereo and at
# 44.1 kHz where the codec has it (Opus is 48 kHz only): the actor also resamples and downmixes to mono
FORMATS = [("beeps.mp3", ["-ar", "44100", "-c:a", "libmp3lame", "-b:a", "128k"]),
           ("beeps.m4a", ["-ar", "44100", "-c:a", "aac", "-b:a", "128k"]),
           ("beeps.flac", ["-ar", "44100", "-c:a", "flac"]),
           ("beeps.ogg", ["-ar", "44100", "-c:a", "libvorbis", "-q:a", "5"]),
           ("beeps.opus", ["-ar", "48000", "-c:a", "libopus", "-b:a", "96k"])]


def transcode(src: Path, dst: Path, codec_args: list[str]) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-ac", "2",
                    *codec_args, str(dst)], check=True, capture_output=True, timeout=60)
    return dst


@pytest.mark.parametrize(("name", "codec_args"), FORMATS, ids=[n.split(".")[1] for n, _ in FORMATS])
def test_each_format_plays_its_beeps_in_order(tmp_path: Path, beeps: Path, name: str, codec_args: list[str]) -> None:
    p = Player(path=str(transcode(beeps, tmp_path / name, codec_args)))
    p.play_for(3.4)
    (started,) = p.h.events("music_started")
    assert started.data["duration_s"] == pytest.approx(3.0, abs=0.1), started.data  # codec padding aside
    assert [i for _, i in beeps_heard(p.audio(), RATE, 6)] == [0, 1, 2, 3, 4, 5]
    assert p.names() == ["music_started", "music_completed"]


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    """Serves a folder over HTTP without a log line per request."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_url_plays_like_a_file_and_an_unreachable_one_is_an_event(tmp_path: Path, beeps: Path) -> None:
    transcode(beeps, tmp_path / "beeps.mp3", FORMATS[0][1])
    handler = functools.partial(QuietFiles, directory=str(tmp_path))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            port = server.server_address[1]
            p = Player(path=f"http://127.0.0.1:{port}/beeps.mp3")
            p.play_for(3.4)
            assert [i for _, i in beeps_heard(p.audio(), RATE, 6)] == [0, 1, 2, 3, 4, 5]
            p.h.control("start", path=f"http://127.0.0.1:{port}/gone.mp3")  # a 404: an event, the stream goes on
            p.play_for(0.2)
        finally:
            server.shutdown()
    (err,) = p.h.events("music_error")
    assert err.data["code"] in (1301, 1210) and "gone.mp3" in err.data["message"], err.data
    assert p.names()[-1] == "music_error"
