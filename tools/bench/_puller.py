"""A low-latency RTMP puller that reads the machine stamp of every decoded frame (glass-to-glass).

    python -m tools.bench._puller URL --out FILE [--duration S]

It uses the project's player (`mediaengine.sdk.pull.StreamPuller`: PyAV, low-delay decoder, slice threads,
stamp read from the luma plane) when it is there, else (or with `--own`) a PyAV loop of its own
(`fflags=nobuffer`, `flags=low_delay`, one decoder thread).  Per decoded frame it records the
burned-in counter, the source's wall-clock ms, and the wall-clock ms and CLOCK_MONOTONIC time at
which the decoded picture was available.  Latency = receive wall ms - stamp wall ms (same machine,
same clock).  On SIGTERM, SIGINT, the duration or the end of the stream it writes JSON to FILE and
exits.

`Puller` runs it as a subprocess from a benchmark and loads the records.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from ._procs import die_with_parent

ROOT = Path(__file__).resolve().parents[2]


class _Stop(Exception):
    pass


_stopping: list[int] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _stopping.append(signum)
    raise _Stop()


def _pull_with_player(url: str, doc: dict[str, Any], deadline: float, open_timeout_s: float) -> bool:
    """Pull with `mediaengine.sdk.pull.StreamPuller` (the project's player); False if it is not available."""
    try:
        from mediaengine.sdk.pull import Ended, StreamPuller, VideoFrameInfo
    except ImportError:
        return False
    import queue

    doc["puller"] = "mediaengine.sdk.pull.StreamPuller"
    records: list[list[float]] = doc["frames"]
    connected = False
    while time.monotonic() < deadline:  # until it connects: the stream may not be published yet
        puller = StreamPuller(url, timeout_s=open_timeout_s)
        puller.start()
        retry = False
        try:
            while time.monotonic() < deadline:
                try:
                    rec = puller.records.get(timeout=0.2)
                except queue.Empty:
                    continue
                if isinstance(rec, VideoFrameInfo):
                    connected = True
                    if rec.stamp is None:
                        doc["unreadable"] += 1
                    else:
                        records.append([rec.stamp.counter, rec.stamp.wall_ms,
                                        rec.stamp.wall_ms + (rec.latency_ms or 0.0), rec.t])
                elif isinstance(rec, Ended):
                    doc["error"] = f"ended: {rec.reason}"
                    retry = rec.reason == "connect failed" and not connected
                    break
        except _Stop:
            return True
        finally:
            puller.stop(2.0)
        if not retry:
            break
        time.sleep(0.1)
    return True


def _pull_with_pyav(url: str, doc: dict[str, Any], deadline: float, open_timeout_s: float) -> None:
    """A PyAV loop (fflags=nobuffer, flags=low_delay, one decoder thread); it also decodes the audio and
    records each beep onset (`_beep.py`): [onset pts s, decoded wall s, decoded monotonic s]; video
    records carry the frame's pts s as a fifth field."""
    import av
    import numpy as np
    from mediaengine.sdk.stamp import read

    from ._beep import OnsetFinder

    doc["puller"] = "PyAV loop (tools.bench._puller)"
    records: list[list[float]] = doc["frames"]
    container = None
    try:
        while container is None:
            try:
                container = av.open(url, options={"fflags": "nobuffer", "flags": "low_delay"},
                                    timeout=(open_timeout_s, 5.0))
            except (av.FFmpegError, OSError) as exc:  # stream not published yet: try again
                if time.monotonic() > deadline:
                    raise
                doc["error"] = f"open: {exc}"
                time.sleep(0.1)
        doc["error"] = None
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        astream = container.streams.audio[0] if container.streams.audio else None
        finder: OnsetFinder | None = None
        beeps: list[list[float]] = doc["beeps"]
        for packet in container.demux(*([stream, astream] if astream is not None else [stream])):
            if packet.stream is astream:
                for aframe in packet.decode():
                    wall, mono = time.time(), time.monotonic()
                    finder = finder or OnsetFinder(aframe.sample_rate)
                    pcm = aframe.to_ndarray()
                    mono_pcm = pcm.astype(np.float32) / (32768.0 if pcm.dtype == np.int16 else 1.0)
                    mono_pcm = mono_pcm.reshape(len(aframe.layout.channels), -1)[0] if aframe.format.is_planar \
                        else mono_pcm.reshape(-1, len(aframe.layout.channels))[:, 0]
                    for j in finder.feed(mono_pcm):
                        beeps.append([float(aframe.time or 0.0) + j / aframe.sample_rate, wall, mono])
                continue
            for frame in packet.decode():
                wall = time.time()
                mono = time.monotonic()
                plane = frame.planes[0]
                h, w = frame.height, frame.width
                luma = np.frombuffer(memoryview(plane), np.uint8).reshape(h, plane.line_size)[:, :w]
                st = read(luma)
                if st is None:
                    doc["unreadable"] += 1
                    continue
                records.append([st.counter, st.wall_ms, wall * 1000.0, mono, float(frame.time or 0.0)])
            if time.monotonic() > deadline:
                break
    except _Stop:
        pass
    except (av.FFmpegError, OSError) as exc:
        if not _stopping:  # a signal during a blocking read surfaces as FFmpeg's "exit requested"
            doc["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            if container is not None:
                container.close()


def pull(url: str, out: Path, duration_s: float, open_timeout_s: float, own: bool = False) -> int:
    """Pull until the duration, a signal or the end of the stream; write the records to `out`."""
    doc: dict[str, Any] = {"url": url, "frames": [], "beeps": [], "unreadable": 0, "error": None,
                           "started_wall": time.time()}
    deadline = time.monotonic() + duration_s
    try:
        if own or not _pull_with_player(url, doc, deadline, open_timeout_s):
            _pull_with_pyav(url, doc, deadline, open_timeout_s)
    except _Stop:
        pass
    finally:
        out.write_text(json.dumps(doc))
    return 0


class Puller:
    """The puller as a subprocess; `stop()` ends it and returns its records."""

    def __init__(self, url: str, out: Path, duration_s: float = 600.0, open_timeout_s: float = 10.0,
                 own: bool = False) -> None:
        self.out = out
        self.log = out.with_suffix(".log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tools.bench._puller", url, "--out", str(out),
                 "--duration", str(duration_s), "--open-timeout", str(open_timeout_s), *(["--own"] if own else [])],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        try:
            doc: dict[str, Any] = json.loads(self.out.read_text())
        except (OSError, ValueError) as exc:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"the puller left no result ({exc}); log:\n{log}") from None
        return doc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench._puller")
    p.add_argument("url")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--duration", type=float, default=600.0)
    p.add_argument("--open-timeout", type=float, default=10.0)
    p.add_argument("--own", action="store_true", help="use the PyAV loop here, not mediaengine.sdk.pull")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    return pull(args.url, args.out, args.duration, args.open_timeout, args.own)


if __name__ == "__main__":
    sys.exit(main())
