"""Push pictures and sound that this program draws into a live RTMP stream, through the Python API.

Each picture is a numpy array with its frame counter burned in (`mediaengine.sdk.stamp`, readable
back from the relayed stream) over a moving colour gradient; the sound is a continuous 440 Hz sine,
48 kHz stereo float32, pushed in one chunk per picture.  The engine runs an `external_source` node
that takes both, an H.264 and an AAC encoder, and an RTMP sender:

    python examples/external_frames.py rtmp://127.0.0.1:1935/live/test --seconds 30
    python examples/external_frames.py rtmp://... --width 640 --height 360 --pix-fmt bgr24

The program paces itself like an app that renders at `fps` (it waits for each picture's deadline).
With `--fast` it pushes as fast as it can instead: the node (policy `block`) then holds it back to
real time, which is what a `block` node's back-pressure is for.  It prints what it pushed and the
node's counters as JSON (`tools/external_frames_check.py` runs it against nginx-rtmp and checks the
relayed stream).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from mediaengine import Engine
from mediaengine.sdk import stamp

RATE = 48_000
TONE_HZ = 440.0
AMPLITUDE = 0.3


def topology(url: str, width: int, height: int, fps: float) -> dict[str, Any]:
    """external_source -> H.264 + AAC -> RTMP."""
    return {"version": 1, "name": "external_frames", "nodes": [
        {"id": "app", "kind": "external_source",
         # a 300 ms jitter buffer: an RTMP viewer is seconds behind anyway, and it rides out this program
         # being held up for a moment on a busy machine (the default is 100 ms)
         "options": {"width": width, "height": height, "fps": fps, "rate": RATE, "channels": 2, "latency_ms": 300}},
        {"id": "venc", "kind": "video_encoder", "inputs": {"in": "app/video"},
         "options": {"bitrate_kbps": 1500, "gop_s": 1, "preset": "veryfast"}},
        {"id": "aenc", "kind": "audio_encoder", "inputs": {"in": "app/audio"}, "options": {"bitrate_kbps": 128}},
        {"id": "push", "kind": "rtmp_sender", "inputs": {"video": "venc", "audio": "aenc"}, "options": {"url": url}},
    ]}


def draw(k: int, width: int, height: int, out: npt.NDArray[np.uint8] | None = None) -> npt.NDArray[np.uint8]:
    """Picture k (rgb24): colour bands that move 4 px per frame, with counter k burned in (about 1 ms
    at 720p: one row computed, copied down the picture)."""
    if out is None:
        out = np.empty((height, width, 3), np.uint8)
    x = np.arange(width, dtype=np.int32) + 4 * k
    row = np.stack([x % 256, (2 * x) % 256, np.full(width, 96)], axis=1).astype(np.uint8)
    out[:] = row[None]
    stamp.burn(out, k, int(time.time() * 1000))
    return out


def tone(first: int, count: int) -> npt.NDArray[np.float32]:
    """Samples [first, first+count) of the sine, (count, 2) float32: chunk after chunk, one waveform."""
    t = (first + np.arange(count)) / RATE
    mono = (AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    return np.repeat(mono[:, None], 2, axis=1)


def as_pix_fmt(rgb: npt.NDArray[np.uint8], pix_fmt: str) -> npt.NDArray[np.uint8]:
    """The picture in the layout `pix_fmt` names (what another app would hand over)."""
    if pix_fmt == "rgb24":
        return rgb
    code = {"bgr24": cv2.COLOR_RGB2BGR, "rgba": cv2.COLOR_RGB2RGBA, "bgra": cv2.COLOR_RGB2BGRA,
            "yuv420p": cv2.COLOR_RGB2YUV_I420}[pix_fmt]
    return np.ascontiguousarray(cv2.cvtColor(rgb, code))


class Feed:
    """Pictures and sound for one `external_source` node; counters and the waveform go on across calls."""

    def __init__(self, eng: Engine, width: int, height: int, fps: float, *, node: str = "app",
                 pix_fmt: str = "rgb24") -> None:
        self.eng, self.node, self.pix_fmt = eng, node, pix_fmt
        self.width, self.height, self.fps = width, height, fps
        self.frames = self.accepted = self.dropped = self.samples = 0
        self._buf = np.empty((height, width, 3), np.uint8)
        self._t0: float | None = None  # when picture 0 was due: one timeline across calls

    def push(self, seconds: float, *, fast: bool = False) -> dict[str, Any]:
        """Push `seconds` of pictures and sound; returns the totals so far."""
        first, t0 = self.frames, time.monotonic()
        if self._t0 is None:
            self._t0 = t0
        for k in range(first, first + round(seconds * self.fps)):
            if not fast:  # an app rendering at fps: wait for this picture's deadline (late: push at once)
                delay = self._t0 + k / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            picture = as_pix_fmt(draw(k, self.width, self.height, self._buf), self.pix_fmt)
            ok = self.eng.push_video(self.node, picture, pix_fmt=self.pix_fmt)
            self.accepted += ok
            self.dropped += not ok
            self.frames = k + 1
            end = round(self.frames * RATE / self.fps)  # the sound up to the end of this picture
            self.eng.push_audio(self.node, tone(self.samples, end - self.samples), RATE)
            self.samples = end
        return {"frames": self.frames, "accepted": self.accepted, "dropped_by_caller": self.dropped,
                "samples": self.samples, "seconds": round(time.monotonic() - t0, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="rtmp://host:port/app/stream")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--pix-fmt", default="rgb24", choices=("rgb24", "bgr24", "rgba", "bgra", "yuv420p"))
    ap.add_argument("--fast", action="store_true", help="push as fast as possible (the node holds it back)")
    args = ap.parse_args(argv)
    with Engine.start(topology(args.url, args.width, args.height, args.fps)) as eng:
        eng.wait_running()
        feed = Feed(eng, args.width, args.height, args.fps, pix_fmt=args.pix_fmt)
        result = feed.push(args.seconds, fast=args.fast)
        result["node"] = next(n for n in eng.ps()["nodes"] if n["id"] == "app").get("metrics", {}).get("actor")
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
