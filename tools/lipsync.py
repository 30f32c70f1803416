"""Lip sync on what nginx-rtmp relays: `python -m tools.lipsync [--seconds 300]`.

A test pattern (every frame carries its frame counter k in the machine stamp, `mediaengine.sdk.stamp`, and
shows engine time k / fps) and a tone that beeps for 50 ms at every whole second of engine time
(`tone` with `beep_every_s: 1`) go through their encoders - the audio through the `mixer` - and the sender
to a local nginx-rtmp; Debian's ffmpeg copies what the server relays into a file.  The stamp marks the
picture of a known engine instant exactly, as a white flash would, and more precisely (every frame,
not one a second).  Then, in the relayed stream:

- video: stream pts of each frame - its engine time (k / fps) = the video's offset (constant if the
  timeline is right);
- audio: each beep's onset (first loud sample after silence, from the decoded samples and the frames'
  pts) - the whole second of engine time it belongs to = the audio's offset;
- lip sync = audio offset - video offset: how much later than the picture of the same instant a player
  that follows the timestamps plays the sound (positive: audio late).  The rtmp_sender moves audio
  timestamps `audio_shift_ms` (40 ms by default) later on purpose, so that is where it should sit.

Prints one line per beep and a summary (median, the first and last minute, spread); `--json FILE`
writes the figures.  The integration test `tests/integration/test_audio_push.py` runs a short version.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from mediaengine.control.process import EngineProcess
from mediaengine.sdk import stamp

from tools.rtmp_server import RtmpServer

ROOT = Path(__file__).resolve().parents[1]
FPS = 30
ONSET_LEVEL = 0.05  # share of full scale that marks a beep's onset

TOPOLOGY = f"""\
version: 1
name: lipsync
nodes:
  - {{id: src,  kind: test_pattern,  options: {{width: 640, height: 360, fps: {FPS}}}}}
  - {{id: venc, kind: video_encoder, inputs: {{in: src}}, options: {{bitrate_kbps: 800, gop_s: 1, preset: veryfast,
                                                                   tune: zerolatency}}}}
  - {{id: beep, kind: tone,          options: {{freq_hz: 1000, rate: 48000, channels: 2, volume: 50,
                                              beep_every_s: 1, beep_ms: 50}}}}
  - {{id: mix,  kind: mixer,         inputs: {{in_beep: beep}}, options: {{rate: 48000, channels: 2}}}}
  - {{id: aenc, kind: audio_encoder, inputs: {{in: mix}}, options: {{bitrate_kbps: 128}}}}
  - {{id: push, kind: rtmp_sender,   inputs: {{video: venc, audio: aenc}}, options: {{url: "${{PUSH_URL}}"}}}}
"""


def video_offset(path: Path, fps: int = FPS) -> float:
    """Median over the decoded frames of (stream pts - engine time k / fps), seconds."""
    interval = round(1e9 / fps) / 1e9
    offsets = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            st = stamp.read(frame.to_ndarray(format="rgb24"))
            if st is None or frame.pts is None or frame.time_base is None:
                continue
            offsets.append(float(frame.pts * frame.time_base) - st.counter * interval)
    if not offsets:
        raise RuntimeError(f"no readable stamp in the video of {path}")
    return float(statistics.median(offsets))


def beep_onsets(path: Path) -> list[float]:
    """Stream time (s) of every beep's first loud sample, from the decoded audio and its frames' pts."""
    onsets: list[float] = []
    quiet_since: float | None = 0.0
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            if frame.pts is None or frame.time_base is None:
                continue
            x = frame.to_ndarray()
            x = x.reshape(-1) if x.ndim == 1 else x[0]  # planar: first channel
            x = x.astype(np.float32) / (32768.0 if x.dtype == np.int16 else 1.0)
            t0 = float(frame.pts * frame.time_base)
            loud = np.flatnonzero(np.abs(x) > ONSET_LEVEL)
            if not len(loud):
                if quiet_since is None:
                    quiet_since = t0
                continue
            if quiet_since is not None and t0 + loud[0] / frame.sample_rate - quiet_since > 0.3:
                onsets.append(t0 + float(loud[0]) / frame.sample_rate)
            quiet_since = None
            if np.abs(x[loud[-1]:]).max() <= ONSET_LEVEL and loud[-1] < len(x) - 1:
                quiet_since = t0 + (loud[-1] + 1) / frame.sample_rate
    return onsets


def lipsync(path: Path) -> list[dict[str, float]]:
    """Per beep: its engine second, the audio's onset in stream time, and the lip-sync offset in ms."""
    v = video_offset(path)
    rows = []
    for t in beep_onsets(path):
        second = round(t - v)  # the whole second of engine time this beep belongs to (offsets << 0.5 s)
        rows.append({"engine_s": second, "onset_s": round(t, 4), "offset_ms": round((t - second - v) * 1000, 1)})
    return rows


def record(url: str, dest: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-rw_timeout", "1500000", "-i", url, "-c", "copy",
                             "-f", "flv", "-y", str(dest)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def run(seconds: float, work: Path) -> list[dict[str, float]]:
    """Push the lip-sync topology for `seconds` to a local nginx-rtmp, record it, measure it."""
    topo = work / "lipsync.yaml"
    topo.write_text(TOPOLOGY)
    runtime = work / "runtime"
    runtime.mkdir(mode=0o700)
    server = RtmpServer(work / "rtmp")
    server.start()
    flv = work / "lipsync.flv"
    try:
        url = server.url(stream="lipsync")
        eng = EngineProcess.launch(topo, runtime_dir=runtime, log_path=work / "engine.log",
                                   args=("--duration", f"{seconds + 3:g}"), env={"PUSH_URL": url}, cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while not any(c.publishing for c in server.clients("lipsync")):
                if time.monotonic() > deadline or eng.proc.poll() is not None:
                    raise RuntimeError(f"the engine did not publish:\n{eng.log[-2000:]}")
                time.sleep(0.05)
            rec = record(url, flv)
            try:
                eng.wait(seconds + 60)
                rec.wait(30)
            finally:
                if rec.poll() is None:
                    rec.kill()
                    rec.wait()
        finally:
            if eng.alive():
                eng.stop(20)
            eng.cleanup()
    finally:
        server.stop()
    return lipsync(flv)


def summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    offs = [r["offset_ms"] for r in rows]
    if not offs:
        return {"beeps": 0}
    first = [r["offset_ms"] for r in rows if r["engine_s"] < rows[0]["engine_s"] + 60]
    last = [r["offset_ms"] for r in rows if r["engine_s"] > rows[-1]["engine_s"] - 60]
    return {"beeps": len(offs), "median_ms": statistics.median(offs), "min_ms": min(offs), "max_ms": max(offs),
            "first_minute_median_ms": statistics.median(first), "last_minute_median_ms": statistics.median(last),
            "drift_ms": statistics.median(last) - statistics.median(first)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.lipsync", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=300.0, help="how long to push (default 300)")
    p.add_argument("--json", default=None, help="write the per-beep figures and the summary here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mediaengine-lipsync-") as work:
        rows = run(args.seconds, Path(work))
    for r in rows:
        print(f"beep at engine {r['engine_s']:>4.0f} s: audio {r['offset_ms']:+6.1f} ms against the picture")
    s = summary(rows)
    print("summary " + json.dumps(s))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": s}, indent=1))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["beep_onsets", "lipsync", "main", "run", "summary", "video_offset"]
