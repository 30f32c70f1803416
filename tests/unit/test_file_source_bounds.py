"""file_source holds a bounded amount of decoded media when one track ends or pauses before the other.

Files made by Debian's ffmpeg: video 1 s + audio 20 s, audio 1 s + video 20 s, and an MP3 with cover
art (one attached picture for 20 s of audio).  The source is ticked on a simulated clock through the
whole file; after every tick the decoded media it holds (`_reader.video`, `_reader.audio`) is measured.
Reading the whole rest of the other track in one tick (119 s of audio, 589 frames, before the fix) is
what must not happen; and each track still plays out exactly as long as the file says.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mediaengine.actors import file_source
from mediaengine.sdk.actor import Context, Emit, Finish
from mediaengine.sdk.formats import NS

FPS = 25
RATE = 48000
SPF = 1024
LONG_S = 20


def _ffmpeg(out: Path, *args: str) -> str:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(out)], check=True, timeout=120)
    return str(out)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("uneven")
    video = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    return {
        "short_video": _ffmpeg(d / "v1a20.mp4", "-f", "lavfi", "-i", f"testsrc=size=320x240:rate={FPS}:duration=1",
                               "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={RATE}:duration={LONG_S}",
                               *video, "-c:a", "aac"),
        "short_audio": _ffmpeg(d / "a1v20.mp4", "-f", "lavfi", "-i",
                               f"testsrc=size=320x240:rate={FPS}:duration={LONG_S}",
                               "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={RATE}:duration=1",
                               *video, "-c:a", "aac"),
        "cover_art": _ffmpeg(d / "cover.mp3", "-f", "lavfi", "-i",
                             f"sine=frequency=440:sample_rate={RATE}:duration={LONG_S}",
                             "-f", "lavfi", "-i", "color=red:size=320x240:duration=1", "-map", "0", "-map", "1",
                             "-frames:v", "1", "-c:a", "libmp3lame", "-c:v", "mjpeg",
                             "-disposition:v", "attached_pic"),
    }


@pytest.fixture
def sources() -> Iterator[list[file_source.FileSource]]:
    made: list[file_source.FileSource] = []
    yield made
    for s in made:
        s.stop()


def _play(src: file_source.FileSource, seconds: float) -> tuple[list[Any], list[Any], float, int, int]:
    """Tick through `seconds` of simulated time; (video frames, audio frames, peak held seconds, peak held
    video frames, peak held bytes) as measured in the reader after every tick."""
    iv = src.tick_interval_ns
    assert iv
    r = src._reader
    video: list[Any] = []
    audio: list[Any] = []
    peak_s, peak_frames, peak_bytes = 0.0, 0, 0
    now = 10 * NS
    end = now + int(seconds * NS)
    while now < end:
        actions = src.on_tick(now)
        video += [a.media for a in actions if isinstance(a, Emit) and a.pad == "video"]
        audio += [a.media for a in actions if isinstance(a, Emit) and a.pad == "audio"]
        held_video_s = (r.video[-1][0] - r.video[0][0]) / NS if r.video else 0.0
        peak_s = max(peak_s, r.audio.available / RATE, held_video_s)
        peak_frames = max(peak_frames, len(r.video))
        peak_bytes = max(peak_bytes, r.audio.available * 4 + sum(
            sum(p.buffer_size for p in f.planes) for _, f in r.video))
        if any(isinstance(a, Finish) for a in actions):
            break
        now = (now // iv + 1) * iv
    return video, audio, peak_s, peak_frames, peak_bytes


def _source(sources: list[file_source.FileSource], url: str) -> file_source.FileSource:
    src = file_source.FileSource(file_source.FileSourceOptions(
        url=url, width=320, height=240, fps=FPS, rate=RATE, samples_per_frame=SPF))
    src.setup(Context())
    sources.append(src)
    return src


LIMIT_S = file_source.MAX_AHEAD_NS / NS + 0.5  # the bound plus one packet of slack


def test_video_shorter_than_audio_holds_a_bounded_audio_buffer(media: dict[str, str],
                                                                sources: list[file_source.FileSource]) -> None:
    src = _source(sources, media["short_video"])
    video, audio, peak_s, peak_frames, peak_bytes = _play(src, LONG_S + 2)
    print(f"short video: {len(video)} video frames, {len(audio) * SPF / RATE:.1f}s of audio; held at most "
          f"{peak_s:.2f}s, {peak_frames} frames, {peak_bytes} bytes")
    assert peak_s <= LIMIT_S
    assert peak_bytes <= LIMIT_S * RATE * 4 + 10 * 320 * 240 * 2
    assert FPS - 1 <= len(video) <= FPS + 1  # the video track ends at its end (1 s) ...
    assert LONG_S - 0.1 <= len(audio) * SPF / RATE <= LONG_S + 0.1  # ... the audio plays all 20 s
    m = src.metrics()
    assert 0 < m["peak_buffered_ms"] <= LIMIT_S * 1000 and 0 < m["peak_buffered_bytes"] <= file_source.MAX_BUFFER_BYTES


def test_audio_shorter_than_video_holds_a_bounded_video_buffer(media: dict[str, str],
                                                                sources: list[file_source.FileSource]) -> None:
    src = _source(sources, media["short_audio"])
    video, audio, peak_s, peak_frames, peak_bytes = _play(src, LONG_S + 2)
    print(f"short audio: {len(video)} video frames, {len(audio) * SPF / RATE:.1f}s of audio; held at most "
          f"{peak_s:.2f}s, {peak_frames} frames, {peak_bytes} bytes")
    assert peak_s <= LIMIT_S
    assert peak_frames <= LIMIT_S * FPS
    assert LONG_S * FPS - 1 <= len(video) <= LONG_S * FPS + 1  # every video frame of the 20 s ...
    assert 0.9 <= len(audio) * SPF / RATE <= 1.1  # ... and the audio ends after its 1 s
    assert [f.seq for f in video] == list(range(video[0].seq, video[0].seq + len(video)))


def test_cover_art_is_held_for_the_whole_audio_with_a_bounded_buffer(media: dict[str, str],
                                                                      sources: list[file_source.FileSource]) -> None:
    src = _source(sources, media["cover_art"])
    video, audio, peak_s, peak_frames, peak_bytes = _play(src, LONG_S + 2)
    print(f"cover art: {len(video)} video frames, {len(audio) * SPF / RATE:.1f}s of audio; held at most "
          f"{peak_s:.2f}s, {peak_frames} frames, {peak_bytes} bytes")
    assert peak_s <= LIMIT_S
    assert LONG_S - 0.1 <= len(audio) * SPF / RATE <= LONG_S + 0.2
    assert len(video) >= (LONG_S - 0.5) * FPS  # the cover shows while the audio plays
    red = video[len(video) // 2].data
    assert red[..., 0].mean() > 200 and red[..., 1].mean() < 40  # it is the cover, not black
    assert all(np.array_equal(f.data, red) for f in video[1:])
