"""Helpers shared by the tests: ffprobe as JSON, a synthetic PyAV push, an ffmpeg recorder, waiting (`wait_for`).

The checks on what a server relays use Debian's `ffprobe`/`ffmpeg`, independent of the PyAV build the
engine pushes with, so a bug in one is not hidden by the same bug in the other.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np


def ffprobe_json(target: str | Path, *args: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Run `ffprobe -v error -of json ARGS TARGET` (a file or URL) and return the parsed output.

    Raises AssertionError with ffprobe's message if it fails, so a test shows why.
    """
    cmd = ["ffprobe", "-v", "error", "-of", "json", *args, str(target)]
    res = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.decode(errors='replace')}")
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def wait_for(cond: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `cond` until it returns something truthy and return that; fail with `what` after `timeout` s.

    An exception from `cond` counts as "not yet" (an engine may not be up yet) and is named in the failure.
    The one polling helper of the tests (tests.enginekit re-exports it).
    """
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
        except Exception as exc:  # the engine may not be up yet
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}" + (f" ({last_exc})" if last_exc else ""))


@dataclass(frozen=True)
class PushResult:
    """What `push_synthetic` muxed."""

    video_packets: int
    audio_packets: int
    payload_bytes: int  # sum of encoded packet sizes


def open_push(
    url: str, *, width: int = 320, height: int = 240, fps: int = 30, sample_rate: int = 44100, gop: int = 15
) -> tuple[av.container.OutputContainer, av.VideoStream, av.AudioStream]:
    """An FLV output to `url` with libx264 (zerolatency, no B-frames) and stereo AAC, connected."""
    container = av.open(url, "w", format="flv")
    video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "tune": "zerolatency"})
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.codec_context.gop_size = gop
    video.codec_context.max_b_frames = 0
    audio = container.add_stream("aac", rate=sample_rate, layout="stereo")
    container.start_encoding()
    return container, video, audio


def push_synthetic(
    url: str,
    duration_s: float = 2.0,
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 30,
    sample_rate: int = 44100,
    gop: int = 15,
) -> PushResult:
    """Push `duration_s` of a moving test picture and a 440 Hz tone to `url`, as fast as it encodes."""
    container, video, audio = open_push(url, width=width, height=height, fps=fps, sample_rate=sample_rate, gop=gop)
    counts = {"video": 0, "audio": 0, "bytes": 0}

    def mux(packets: list[av.Packet[Any]], kind: str) -> None:
        for packet in packets:
            counts[kind] += 1
            counts["bytes"] += packet.size
            container.mux(packet)

    try:
        n_frames = round(duration_s * fps)
        samples_sent, chunk = 0, 1024
        ramp = np.linspace(0, 255, width, dtype=np.float32)
        for i in range(n_frames):
            rgb = np.empty((height, width, 3), np.uint8)
            rgb[..., 0] = (ramp + 8 * i) % 256
            rgb[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
            rgb[..., 2] = (i * 255) // max(1, n_frames - 1)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            mux(video.encode(frame), "video")
            while samples_sent < (i + 1) * sample_rate // fps:
                t = (samples_sent + np.arange(chunk)) / sample_rate
                tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                pcm = np.stack([tone, tone])
                aframe = av.AudioFrame.from_ndarray(pcm, format="fltp", layout="stereo")
                aframe.sample_rate, aframe.pts, aframe.time_base = (
                    sample_rate,
                    samples_sent,
                    Fraction(1, sample_rate),
                )
                samples_sent += chunk
                mux(audio.encode(aframe), "audio")
        mux(video.encode(None), "video")
        mux(audio.encode(None), "audio")
    finally:
        container.close()
    return PushResult(counts["video"], counts["audio"], counts["bytes"])


def start_recorder(url: str, dest: Path, rw_timeout_s: float = 1.5) -> subprocess.Popen[bytes]:
    """Debian ffmpeg copying `url` into an FLV file; it exits `rw_timeout_s` after data stops.

    The caller must wait for (or kill and wait for) the returned process.
    """
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-rw_timeout", str(round(rw_timeout_s * 1e6)),
        "-i", url, "-c", "copy", "-f", "flv", "-y", str(dest),
    ]  # fmt: skip
    log = open(dest.with_suffix(".log"), "wb")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()
