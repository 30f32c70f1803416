"""Run examples/external_frames.py against a local nginx-rtmp and check what the server relays.

    python -m tools.external_frames_check --seconds 30                 # 720p30, prints JSON, exit 1 on failure
    python -m tools.external_frames_check --seconds 8 --width 640 --height 360

Starts nginx-rtmp (tools.rtmp_server) on free ports, pulls the stream back with Debian's ffmpeg into an
FLV file while the example pushes numpy pictures (frame counter burned in) and a 48 kHz sine through
`Engine.push_video` / `push_audio`, then checks the recording:

- video: every picture's counter is there, in order (the encoder may repeat a picture to keep the
  stream alive, never reorder one); counters missing from the relayed stream must be accounted for
  by the `external_source` node's drop counters (`dropped` + `caller_dropped` + `late`), or, when the
  caller stalled past the encoder's keepalive, by the encoder's `dropped_frames` (reported apart);
- audio: continuous: the decoded sine has no silent or broken 10 ms window from the first picture to
  the last (a gap in what the node got would be filled with silence by the audio encoder) and the AAC
  packet timestamps have no hole.

`run_check(...)` is what tests/integration/test_external_frames.py calls with a short duration.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np

from tools.rtmp_server import RtmpServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "external_frames.py"


def load_example() -> ModuleType:
    """examples/external_frames.py as a module (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("external_frames_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def video_counters(flv: Path) -> list[int]:
    """The burned-in counter of every decoded picture, in presentation order (-1: unreadable)."""
    from mediaengine.sdk.stamp import read

    out: list[tuple[float, int]] = []
    with av.open(str(flv)) as c:
        for frame in c.decode(video=0):
            s = read(frame.to_ndarray(format="rgb24"))
            out.append((float(frame.pts * frame.time_base) if frame.pts is not None else 0.0,
                        -1 if s is None else s.counter))
    return [k for _, k in sorted(out)]


def audio_report(flv: Path, amplitude: float) -> dict[str, Any]:
    """Decoded audio: 10 ms windows whose RMS is far from the sine's (silence, clicks), packet holes."""
    with av.open(str(flv)) as c:
        if not c.streams.audio:
            return {"present": False}
        stream = c.streams.audio[0]
        pts = [float(p.pts * stream.time_base) for p in c.demux(stream) if p.pts is not None]
    with av.open(str(flv)) as c:
        chunks = [f.to_ndarray().astype(np.float64) for f in c.decode(audio=0)]
        rate = c.streams.audio[0].rate
    pcm = np.concatenate([ch.reshape(ch.shape[0], -1)[0] if ch.ndim == 2 else ch for ch in chunks]) if chunks else \
        np.zeros(0)
    win = rate // 100
    n = len(pcm) // win
    rms = np.sqrt((pcm[: n * win].reshape(n, win) ** 2).mean(axis=1)) if n else np.zeros(0)
    want = amplitude / np.sqrt(2)
    # skip the encoder's priming at the start and the last partial second (the push ended there)
    body = rms[20:-20] if len(rms) > 60 else rms
    bad = int(np.sum((body < 0.5 * want) | (body > 1.5 * want)))
    # (where in the recording, how long): a hole is a jump of the AAC timestamps (1024 samples = 21.3 ms)
    holes = [(round(a, 2), round(b - a, 3)) for a, b in itertools.pairwise(sorted(pts)) if b - a > 0.035]
    return {"present": True, "seconds": round(len(pcm) / rate, 3), "windows": len(body), "bad_windows": bad,
            "packet_holes": holes, "ok": bad == 0 and not holes}


def video_report(counters: list[int], pushed: int, node_drops: int) -> dict[str, Any]:
    readable = [k for k in counters if k >= 0]
    in_order = all(b >= a for a, b in itertools.pairwise(readable))
    seen = set(readable)
    first, last = (min(seen), max(seen)) if seen else (0, -1)
    missing = [k for k in range(first, last + 1) if k not in seen]
    repeats = len(readable) - len(seen)
    return {"pictures": len(counters), "unreadable": len(counters) - len(readable), "first": first, "last": last,
            "pushed": pushed, "missing": len(missing), "missing_first": missing[:10], "repeated": repeats,
            "in_order": in_order, "node_drops": node_drops,
            "ok": in_order and len(counters) == len(readable) and len(missing) <= node_drops}


def node_metrics(eng: Any, node: str) -> dict[str, Any]:
    for n in eng.ps()["nodes"]:
        if n.get("id") == node:
            return dict(n.get("metrics", {}).get("actor", {}))
    return {}


def run_check(workdir: Path, seconds: float, width: int, height: int, fps: float, *, pix_fmt: str = "rgb24",
              fast: bool = False) -> dict[str, Any]:
    """Push through a real engine to a real nginx-rtmp, pull with ffmpeg, check; returns the report."""
    from mediaengine import Engine

    example = load_example()
    workdir.mkdir(parents=True, exist_ok=True)
    server = RtmpServer(workdir / "rtmp")
    flv = workdir / "pulled.flv"
    puller: subprocess.Popen[bytes] | None = None
    server.start()
    try:
        url = server.url("live", "ext")
        with Engine.start(example.topology(url, width, height, fps), runtime_dir=workdir / "run") as eng:
            eng.wait_running()
            feed = example.Feed(eng, width, height, fps, pix_fmt=pix_fmt)
            feed.push(0.5)  # the stream is up: pull it (pushing on while ffmpeg probes it, so it sees audio too)
            puller = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-rw_timeout", "3000000",
                                       "-analyzeduration", "2000000", "-i", url, "-c", "copy", "-f", "flv", "-y",
                                       str(flv)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

            def pulling() -> bool:
                feed.push(0.2)
                if puller is not None and puller.poll() is not None:
                    raise RuntimeError(f"ffmpeg could not pull {url}: {puller.communicate()[1].decode()[-500:]}")
                return flv.exists() and flv.stat().st_size > 10_000

            _wait(pulling, 30, "the puller's first bytes")
            t0 = time.monotonic()
            pushed = feed.push(seconds, fast=fast)
            push_s = time.monotonic() - t0
            # the counters are published once a second: wait until every picture taken has been emitted
            metrics = _wait(lambda: (m := node_metrics(eng, "app")).get("frames_emitted", 0)
                            + m.get("dropped", 0) + m.get("late", 0) >= pushed["accepted"] and m,
                            10, "the node to emit every picture")
            encoder = node_metrics(eng, "venc")
        assert puller is not None
        _, err = puller.communicate(timeout=20)
    finally:
        if puller is not None and puller.poll() is None:
            puller.kill()
            puller.wait()
        server.stop()
    drops = int(metrics.get("dropped", 0)) + int(metrics.get("caller_dropped", 0)) + int(metrics.get("late", 0))
    video = video_report(video_counters(flv), pushed["frames"], drops + pushed["dropped_by_caller"])
    # a caller that stalls longer than the encoder's keepalive_ms: the repeats may cover the next picture's
    # time, and the encoder drops it (counted in its `dropped_frames`)
    video["encoder_dropped"] = int(encoder.get("dropped_frames", 0))
    video["ok"] = video["ok"] or (video["in_order"] and video["missing"] <= video["node_drops"]
                                  + video["encoder_dropped"] and video["unreadable"] == 0)
    audio = audio_report(flv, example.AMPLITUDE)
    return {"seconds": seconds, "load_average": [round(x, 2) for x in os.getloadavg()],
            "size": f"{width}x{height}", "fps": fps, "pix_fmt": pix_fmt, "fast": fast,
            "push_wall_s": round(push_s, 2), "pushed": pushed, "node": metrics, "video": video, "audio": audio,
            "puller_stderr": err.decode(errors="replace")[-500:], "ok": bool(video["ok"] and audio.get("ok"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--pix-fmt", default="rgb24")
    ap.add_argument("--fast", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="me-ext-") as tmp:
        report = run_check(Path(tmp), args.seconds, args.width, args.height, args.fps, pix_fmt=args.pix_fmt,
                           fast=args.fast)
    print(json.dumps(report, indent=1, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
