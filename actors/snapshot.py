"""Snapshot sink: saves video frames as PNG files (the first frame, periodically, or on command).

Handy for checking what a branch of the graph looks like without a player, and for tests.  The PNG is
written atomically (a temporary file in the same folder, then a rename), so a reader never sees a
half-written picture; parent folders are created.  Every save publishes
`snapshot_saved {path, pts_ns, seq}`.  `every_s` is measured in media time (frame pts), so it does not
depend on how fast frames arrive.  The input drops the oldest frame when the sink falls behind (PNG
encoding of a 720p frame takes ~30 ms).

    nodes:
      - {id: snap, kind: snapshot, inputs: {in: cam}, options: {path: out/cam.png, every_s: 5}}

Control: `snapshot {path?}` saves the next frame (to `path` if given) and replies `{path}` (absolute).
A `path` given by a command is relative to the topology's `output_dir` (default: the engine's working
directory), must end with `.png` and stay inside that folder: `..`, an absolute path elsewhere, a
hidden name are refused in the reply with `OutputPathError` (1415); a symbolic link met on the way
when the frame is written (or a full disk) publishes `snapshot_failed {path, code, message}` and the
node goes on: a client's request never stops it (docs/security.md).  The `path` option, written in
the topology itself, is not restricted.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import cv2
import numpy as np
from mediaengine.sdk.actor import Action, Actions, Actor, Context, Event, InPort, Reply, option
from mediaengine.sdk.errors import FieldError, FileError, FormatError, OptionError, OutputPathError, QueueFullError
from mediaengine.sdk.formats import NS, Format, Frame, Packet
from mediaengine.sdk.outputs import OutputDir
from numpy.typing import NDArray

__all__ = ["Snapshot", "SnapshotOptions", "encode_png", "save_png"]

PNG_SUFFIXES = (".png",)


#: distinct snapshot paths that may wait for the next frame (each costs a PNG write in one hook)
MAX_PENDING = 16


@dataclass(frozen=True)
class SnapshotOptions:
    path: str = option("out/snapshot.png",
                       doc="PNG file to write (overwritten by each save; folders are created)")
    every_s: float = option(0.0, range=(0.0, 86400.0), live=True,
                            doc="save every this many seconds of media time; 0 = first frame and on command only")


# ---- pure-ish function (array in, file out) -------------------------------------------------------

def _new_file_mode() -> int:
    """0666 minus the process umask: the mode `open()` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def encode_png(rgb: NDArray[np.uint8]) -> bytes:
    """An HxWx3 rgb24 (or HxW grey) array as PNG bytes."""
    pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise FormatError(f"cannot encode a {rgb.shape} {rgb.dtype} frame as PNG")
    return bytes(encoded.tobytes())


def save_png(rgb: NDArray[np.uint8], path: str) -> str:
    """Write an HxWx3 rgb24 (or HxW grey) array to `path` as PNG, atomically.  Returns the absolute path.

    Raises FileError if the folder cannot be created or written.
    """
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    encoded = encode_png(rgb)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".snapshot-", suffix=".png.tmp")
    except OSError as e:
        raise FileError(f"cannot write snapshot {target!r}: {e}; check the folder is writable") from e
    try:
        os.fchmod(fd, _new_file_mode())  # mkstemp makes 0600; a snapshot is an ordinary file
        with os.fdopen(fd, "wb") as f:
            f.write(encoded)
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise FileError(f"cannot write snapshot {target!r}: {e}; check the folder is writable") from e
    return target


# ---- the actor ------------------------------------------------------------------------------------

class Snapshot(Actor[SnapshotOptions]):
    """Writes PNG snapshots of the incoming video."""

    inputs = {"in": InPort("video", policy="drop_oldest")}
    outputs = {}
    Options = SnapshotOptions

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        if not options.path:
            raise OptionError("`path` must not be empty")

    def setup(self, ctx: Context) -> None:
        self._last_pts: int | None = None  # pts of the last periodic (or first) save
        self._default_requested = False  # a `snapshot` command without `path` asked for the next frame
        self._requested: list[PurePosixPath] = []  # checked paths (in output_dir) asked for by `snapshot` commands
        self._outputs = OutputDir.of(ctx.output_dir)

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command != "snapshot":
            return super().on_control(command, args)
        if "path" not in args:
            self._default_requested = True
            return [Reply({"path": os.path.abspath(self.options.path)})]
        path = args["path"]
        if not isinstance(path, str) or not path:
            raise FieldError(f"snapshot: `path` must be a non-empty string, got {path!r}")
        checked = self._outputs.check(path, PNG_SUFFIXES)
        if checked not in self._requested:
            if len(self._requested) >= MAX_PENDING:  # no frame comes (a paused source): do not pile them up
                raise QueueFullError(f"snapshot: {MAX_PENDING} snapshots already wait for the next frame; "
                                     "retry once one is saved (event snapshot_saved)")
            self._requested.append(checked)
        return [Reply({"path": self._outputs.absolute(checked)})]

    def _due(self, pts_ns: int) -> bool:
        if self._last_pts is None:
            return True
        every = self.options.every_s
        return every > 0 and pts_ns - self._last_pts >= round(every * NS)

    def on_frame(self, pad: str, media: Frame | Packet) -> list[Action]:
        if not isinstance(media, Frame):
            raise FormatError(f"snapshot expects video frames on `{pad}`, got {type(media).__name__}")
        commanded = list(dict.fromkeys(self._requested))  # each distinct path once per frame
        self._requested.clear()
        saved: list[str] = []
        if self._due(media.pts_ns) or self._default_requested:
            self._default_requested = False
            self._last_pts = media.pts_ns
            saved.append(save_png(media.data, self.options.path))  # the topology's own path: trusted
        failed: list[Action] = []
        if commanded:
            encoded = encode_png(media.data)
            for path in commanded:
                try:
                    saved.append(self._outputs.write(path, encoded, _new_file_mode()))
                except (OutputPathError, FileError) as exc:  # a client's request failed, not this node
                    failed.append(Event("snapshot_failed", {"path": self._outputs.absolute(path),
                                                            "code": exc.code, "message": str(exc)}))
        return [*(Event("snapshot_saved", {"path": path, "pts_ns": media.pts_ns, "seq": media.seq})
                  for path in saved), *failed]
