"""Write the real-face test video: `python -m tools.faceclip [OUT.mp4] [--seconds 10] [--size 1280x720]`.

The moving face the beauty tests use (tests/facekit.py: scikit-image's `astronaut` portrait, shifted,
scaled and turned a little per frame, with webcam-like sensor noise), encoded with libx264 at 30 fps.
It is generated, never committed: `topologies/beauty_push.yaml` plays it (default out/face_clip.mp4), and
the benchmark and the README's before/after picture are made from it.  Needs the dev extras
(scikit-image).  The motion repeats every 90 frames and the file loops cleanly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import av
import numpy as np

from tests import facekit

DEFAULT_OUT = Path("out/face_clip.mp4")


def write_clip(out: Path, seconds: float = 10.0, size: tuple[int, int] = (1280, 720), crf: int = 20) -> int:
    """Write `seconds` of the moving face to `out` (H.264 in MP4, 30 fps); returns the frame count."""
    cycle = facekit.face_clip(n=90, size=size, noise=True, h264=False)
    n = max(1, round(seconds * 30))
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "g": "30"}
        for i in range(n):
            # forwards then backwards through the cycle: the motion is smooth across the loop point
            k = i % 180
            frame = cycle[k if k < 90 else 179 - k]
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.faceclip", description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help=f"MP4 to write (default {DEFAULT_OUT})")
    p.add_argument("--seconds", type=float, default=12.0, help="length (default 12 s: one forward-back cycle x2)")
    p.add_argument("--size", default="1280x720", help="WxH (default 1280x720)")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    n = write_clip(args.out, args.seconds, (w, h))
    print(f"wrote {args.out}: {n} frames, {w}x{h} at 30 fps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
