"""The comparison pusher: the ffmpeg CLI fed the engine's own test frames and tone through pipes.

    python -m tools.bench._feeder URL --spec JSON [--duration S]

The feeder renders exactly what the engine's `test_pattern` and `tone` actors render (same pure
functions, `render_frame` with the machine stamp of the current wall clock, `tone_samples`), paced
in real time, and writes raw rgb24 video to ffmpeg's stdin and s16le audio to a second pipe
(`pipe:N`, the fd passed down).  ffmpeg encodes with the settings the engine's `video_encoder` / `audio_encoder` use
(libx264 preset/tune/GOP/no B-frames/threads/ABR with VBV max rate and buffer, AAC bit rate) and
pushes FLV over RTMP.  So both sides encode the same pictures with the same encoder settings; the
feeder's rendering stands in for the engine's source actors.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from types import FrameType

from ._beep import gate
from ._procs import die_with_parent


@dataclass(frozen=True)
class PushSpec:
    """What both pushers send: picture, tone and encoder settings (read from the engine topology)."""

    width: int = 1280
    height: int = 720
    fps: float = 30.0
    pattern: str = "bars"
    text: str = ""
    freq_hz: float = 440.0
    rate: int = 48000
    channels: int = 1
    samples_per_frame: int = 1024
    volume: float = 30.0
    v_bitrate_kbps: int = 1200
    preset: str = "veryfast"
    tune: str = "zerolatency"
    gop_s: float = 2.0
    bframes: int = 0
    threads: int = 1
    profile: str = ""
    vbv_buffer_s: float = 1.0
    a_bitrate_kbps: int = 64
    audio_offset_ms: float = 0.0  # audio timestamps later by this much (the sender's `audio_offset_ms`)
    beeps: bool = False  # the tone only in beeps on the wall clock (`_beep.py`), as the engine's `bench_beep`

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PushSpec:
        return cls(**json.loads(text))


#: no probing buffer on the raw pipes (their formats are given), so ffmpeg starts encoding at once
LOW_DELAY_INPUT = ["-fflags", "nobuffer", "-probesize", "32", "-analyzeduration", "0"]


def ffmpeg_command(spec: PushSpec, url: str, audio_fd: int) -> list[str]:
    gop = max(1, round(spec.gop_s * spec.fps))
    x264 = ["-c:v", "libx264", "-preset", spec.preset, "-g", str(gop), "-bf", str(spec.bframes),
            "-threads", str(spec.threads), "-b:v", f"{spec.v_bitrate_kbps}k", "-maxrate", f"{spec.v_bitrate_kbps}k",
            "-bufsize", f"{max(1, round(spec.v_bitrate_kbps * spec.vbv_buffer_s))}k", "-sc_threshold", "0",
            "-forced-idr", "1", "-pix_fmt", "yuv420p"]
    if spec.tune:
        x264 += ["-tune", spec.tune]
    if spec.profile:
        x264 += ["-profile:v", spec.profile]
    # the engine's sender moves audio later so the FLV muxer never holds video for it; -itsoffset on
    # the audio input does the same in the CLI (without it ffmpeg's muxer waits for the AAC delay)
    audio_offset = ["-itsoffset", f"{spec.audio_offset_ms / 1000:g}"] if spec.audio_offset_ms else []
    return [
        "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats",
        *LOW_DELAY_INPUT, "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{spec.width}x{spec.height}",
        "-framerate", f"{spec.fps:g}", "-i", "pipe:0",
        *LOW_DELAY_INPUT, *audio_offset, "-f", "s16le", "-ar", str(spec.rate), "-ac", str(spec.channels),
        "-i", f"pipe:{audio_fd}",
        "-map", "0:v", "-map", "1:a", *x264,
        "-c:a", "aac", "-b:a", f"{spec.a_bitrate_kbps}k",
        # the same muxer settings as the engine's rtmp_sender: never hold a packet for interleaving
        "-max_interleave_delta", "1", "-flush_packets", "1", "-f", "flv", url,
    ]


class _Stop(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def feed(spec: PushSpec, url: str, duration_s: float) -> int:
    import numpy as np
    from mediaengine.actors.test_pattern import make_background, render_frame
    from mediaengine.actors.tone import tone_samples

    audio_r, audio_w = os.pipe()
    proc = subprocess.Popen(ffmpeg_command(spec, url, audio_r), stdin=subprocess.PIPE, pass_fds=(audio_r,),
                            preexec_fn=die_with_parent)
    os.close(audio_r)
    assert proc.stdin is not None
    stop = threading.Event()
    t0 = time.monotonic() + 0.05
    wall0 = time.time() + (t0 - time.monotonic())  # wall clock at sample 0 of the audio timeline
    errors: list[str] = []

    def video() -> None:
        assert proc.stdin is not None
        bg = make_background(spec.pattern, spec.width, spec.height)  # type: ignore[arg-type]
        buf = np.empty((spec.height, spec.width, 3), np.uint8)
        k = 0
        try:
            while not stop.is_set():
                delay = t0 + k / spec.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                img = render_frame(buf, bg, k, spec.fps, time.time_ns() // 1_000_000, spec.text,
                                   spec.pattern)  # type: ignore[arg-type]
                proc.stdin.write(img.data)
                proc.stdin.flush()
                k += 1
        except (BrokenPipeError, ValueError, OSError) as exc:
            if not stop.is_set():
                errors.append(f"video pipe: {exc}")

    def audio() -> None:
        spf = spec.samples_per_frame
        i = 0
        try:
            with os.fdopen(audio_w, "wb", buffering=0) as out:
                while not stop.is_set():
                    delay = t0 + i * spf / spec.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    pcm = tone_samples(i * spf, spf, spec.freq_hz, spec.rate, spec.channels, spec.volume / 100)
                    if spec.beeps:
                        pcm = gate(pcm, i * spf, spec.rate, wall0)
                    out.write(pcm.tobytes())
                    i += 1
        except (BrokenPipeError, ValueError, OSError) as exc:
            if not stop.is_set():
                errors.append(f"audio pipe: {exc}")

    threads = [threading.Thread(target=video, daemon=True), threading.Thread(target=audio, daemon=True)]
    for t in threads:
        t.start()
    code = 0
    try:
        end = time.monotonic() + duration_s
        while time.monotonic() < end and proc.poll() is None and not errors:
            time.sleep(0.05)
    except _Stop:
        pass
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        for t in threads:
            t.join(2)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(5)
    if errors:
        print("; ".join(errors), file=sys.stderr)
        return 1
    return 0 if code in (0, 255, -signal.SIGTERM) else code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench._feeder")
    p.add_argument("url")
    p.add_argument("--spec", required=True, help="PushSpec as JSON")
    p.add_argument("--duration", type=float, default=20.0)
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return feed(PushSpec.from_json(args.spec), args.url, args.duration)


if __name__ == "__main__":
    sys.exit(main())
