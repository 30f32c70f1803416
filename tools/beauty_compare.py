"""A before/after picture of the beauty filter: `python -m tools.beauty_compare OUT.png [--image IN] [--level 4]`.

Runs the `beauty` actor (in-process, through `mediaengine.testing.ActorHarness`: the same code a push runs)
on a picture - by default the real face of the tests (tests/facekit.py, scikit-image's astronaut) - for a
few frames, so the landmark tracking settles, and writes the face's region before and after side by side.
The README's picture is made with `python -m tools.beauty_compare docs/img/beauty_before_after.png`.
`--set eye=60` (repeatable) overrides one effect on top of the level.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from mediaengine.actors.beauty import Beauty
from mediaengine.actors.beauty.regions import face_box
from mediaengine.sdk.formats import Frame, VideoFormat
from mediaengine.testing import ActorHarness


def before_after(rgb: np.ndarray, options: dict[str, object], frames: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The picture and the beautified picture (after `frames` frames of tracking)."""
    h, w = rgb.shape[:2]
    harness = ActorHarness(Beauty, options, input_formats={"in": VideoFormat(w, h, 30)})
    try:
        for i in range(frames):
            harness.frame("in", Frame(rgb, pts_ns=i * 33_333_333, seq=i))
        if harness.metrics()["frames_with_face"] == 0:
            raise SystemExit("no face found in the picture (faces need to be about 150 px tall or more)")
        return rgb, np.array(harness.emitted("out")[-1].data)
    finally:
        harness.stop()


def side_by_side(before: np.ndarray, after: np.ndarray, box: tuple[int, int, int, int], label: str) -> np.ndarray:
    x, y, w, h = box
    panels = []
    for pic, text in ((before, "before"), (after, f"after ({label})")):
        crop = np.ascontiguousarray(pic[y:y + h, x:x + w])
        cv2.putText(crop, text, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        panels.append(crop)
    return np.hstack([panels[0], np.full((h, 6, 3), 255, np.uint8), panels[1]])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.beauty_compare", description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="PNG to write")
    p.add_argument("--image", type=Path, help="a picture with a face (default: the tests' real face)")
    p.add_argument("--level", type=int, default=4, help="beauty level 0..5 (default 4)")
    p.add_argument("--set", action="append", default=[], metavar="EFFECT=N", help="override one effect (0..100)")
    args = p.parse_args(argv)
    if args.image:
        bgr = cv2.imread(str(args.image))
        if bgr is None:
            raise SystemExit(f"cannot read {args.image}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        from tests import facekit

        rgb = np.array(facekit.place_face())
    options: dict[str, object] = {"level": args.level}
    for item in args.set:
        name, _, value = item.partition("=")
        options[name] = int(value)
    before, after = before_after(rgb, options)
    from mediaengine.actors.beauty.landmarks import FaceMesh

    mesh = FaceMesh()
    lms = mesh.detect(np.ascontiguousarray(before))[0]
    mesh.close()
    label = ", ".join(f"{k} {v}" for k, v in options.items())
    picture = side_by_side(before, after, face_box(lms, before.shape, 0.15), label)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({picture.shape[1]}x{picture.shape[0]}, {label})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
