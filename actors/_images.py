"""Pictures for filters that overlay images (`watermark`): read the bytes, check the size, decode once.

Two ways to name a file, two sets of rules (docs/security.md, "Files the engine reads"):

- a path written in the topology (`watermark.marks[i].path`) is the operator's: read as given;
- a path sent in a control command (`ctl wm add path=...`) is a client's: `ConfinedReader` takes it
  relative to one folder (`assets_dir`), refuses `..`, absolute paths elsewhere, hidden names and
  file types it does not read with `InputPathError` (1334), and opens every folder on the way and the
  file itself with `O_NOFOLLOW`, so a symbolic link cannot lead a client to a file outside that folder
  (whose pixels would otherwise end up in the pushed stream).

Decoding is Pillow's (PNG, JPEG, WebP, GIF, APNG; animated GIF/APNG/WebP with their frame timing) from
the bytes already read, never from the path again.  Sizes are checked from the header before any pixel
is decoded: at most `MAX_SIDE` x `MAX_SIDE` per picture and `MAX_DECODED_BYTES` for all the frames of
an animation (`ImageTooLargeError`, 1331); a file that does not decode is `ImageDecodeError` (1330); a
missing one is `FileError` (1301).
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from mediaengine.sdk.errors import FileError, ImageDecodeError, ImageTooLargeError, InputPathError
from numpy.typing import NDArray
from PIL import Image, ImageSequence, UnidentifiedImageError

__all__ = ["MAX_DECODED_BYTES", "MAX_FILE_BYTES", "MAX_FRAMES", "MAX_SIDE", "ConfinedReader", "MarkImage",
           "decode_folder", "decode_image", "load", "probe", "read_trusted"]

#: the largest picture (each side) an overlay accepts; 16k x 16k is refused before decoding
MAX_SIDE = 4096
#: decoded RGBA bytes of all frames of one animation
MAX_DECODED_BYTES = 256 * 1024 * 1024
#: frames of one animation (file or folder)
MAX_FRAMES = 600
#: bytes of one file read from disk
MAX_FILE_BYTES = 64 * 1024 * 1024
#: bytes read for one mark in all (a folder of frames): a command's read stays short
MAX_READ_BYTES = 128 * 1024 * 1024
#: the file types read (a folder of numbered frames holds files of these types)
SUFFIXES = (".png", ".apng", ".jpg", ".jpeg", ".webp", ".gif")
#: frame rate of a folder of numbered frames when the mark gives neither `fps` nor `loop_s`
FOLDER_FPS = 10.0
_NUMBER = re.compile(r"(\d+)")

Files = list[tuple[str, bytes]]  # (name, bytes): one file, or the frames of a folder in order


@dataclass(frozen=True)
class MarkImage:
    """A decoded overlay picture: one RGBA frame (static) or several with their durations (animated)."""

    frames: tuple[NDArray[np.uint8], ...]  # HxWx4 rgba, all the same size
    durations_ms: tuple[int, ...]  # how long each frame shows (the file's own timing)

    @property
    def animated(self) -> bool:
        return len(self.frames) > 1

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].shape[:2]
        return w, h


# ---- decoding (bytes in, arrays out) ------------------------------------------------------------

def _check_size(w: int, h: int, frames: int, name: str) -> None:
    if w < 1 or h < 1:
        raise ImageDecodeError(f"image {name!r} has no pixels ({w}x{h})")
    if w > MAX_SIDE or h > MAX_SIDE:
        raise ImageTooLargeError(f"image {name!r} is {w}x{h}; an overlay picture may be at most "
                                 f"{MAX_SIDE}x{MAX_SIDE}: scale it down (it is shown at a fraction of the frame)")
    if frames > MAX_FRAMES or frames * w * h * 4 > MAX_DECODED_BYTES:
        raise ImageTooLargeError(f"animation {name!r} has {frames} frames of {w}x{h} "
                                 f"({frames * w * h * 4 / 2**20:.0f} MiB decoded); at most {MAX_FRAMES} frames "
                                 f"and {MAX_DECODED_BYTES // 2**20} MiB: use fewer or smaller frames")


def _open(data: bytes, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(f"image {name!r} is larger than an overlay picture may be (at most "
                                 f"{MAX_SIDE}x{MAX_SIDE}): {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"cannot read image {name!r}: not a PNG, JPEG, WebP, GIF or APNG file "
                               f"({type(e).__name__}: {e})") from e


def decode_image(data: bytes, name: str) -> MarkImage:
    """Decode one file's bytes: a still picture, or every frame of an animated GIF/APNG/WebP with its
    duration.  Size limits are checked from the header first.  Raises ImageDecodeError or
    ImageTooLargeError naming `name`."""
    im = _open(data, name)
    w, h = im.size
    n = int(getattr(im, "n_frames", 1) or 1)
    _check_size(w, h, 1, name)  # before counting frames: a huge canvas is refused from the header alone
    _check_size(w, h, n, name)
    frames: list[NDArray[np.uint8]] = []
    durations: list[int] = []
    try:
        for frame in ImageSequence.Iterator(im):
            frames.append(np.ascontiguousarray(np.asarray(frame.convert("RGBA"), dtype=np.uint8)))
            durations.append(max(10, int(frame.info.get("duration", 100) or 100)))
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageDecodeError(f"cannot decode image {name!r}: {type(e).__name__}: {e} "
                               "(a truncated or corrupt file?)") from e
    if not frames:
        raise ImageDecodeError(f"image {name!r} holds no frame")
    return MarkImage(tuple(frames), tuple(durations))


def decode_folder(files: Files, name: str, fps: float = FOLDER_FPS) -> MarkImage:
    """Decode a folder's numbered frames (already in order) into one animation at `fps`; frames of
    another size than the first are refused (ImageDecodeError)."""
    if not files:
        raise ImageDecodeError(f"folder {name!r} holds no image ({', '.join(SUFFIXES)})")
    if len(files) > MAX_FRAMES:
        raise ImageTooLargeError(f"folder {name!r} holds {len(files)} frames; at most {MAX_FRAMES}")
    frames: list[NDArray[np.uint8]] = []
    for fname, data in files:
        one = decode_image(data, f"{name}/{fname}")
        if frames and one.frames[0].shape != frames[0].shape:
            h0, w0 = frames[0].shape[:2]
            raise ImageDecodeError(f"{name}/{fname} is {one.size[0]}x{one.size[1]}, the first frame "
                                   f"{w0}x{h0}: every frame of a folder must have the same size")
        frames.append(one.frames[0])
        _check_size(one.size[0], one.size[1], len(frames), name)
    step = max(10, round(1000 / fps))
    return MarkImage(tuple(frames), tuple(step for _ in frames))


def frame_order(names: list[str], folder: str = "") -> list[str]:
    """The image files of a folder in frame order: by the last number in the name, then by name.
    ImageTooLargeError for more than MAX_FRAMES of them (before any is read)."""
    def key(n: str) -> tuple[int, str]:
        nums = _NUMBER.findall(n)
        return (int(nums[-1]) if nums else -1, n)

    frames = sorted((n for n in names if n.lower().endswith(SUFFIXES) and not n.startswith(".")), key=key)
    if len(frames) > MAX_FRAMES:
        raise ImageTooLargeError(f"folder {folder!r} holds {len(frames)} frames; at most {MAX_FRAMES}")
    return frames


def _add_read(total: int, data: bytes, name: str) -> int:
    total += len(data)
    if total > MAX_READ_BYTES:
        raise ImageTooLargeError(f"the frames of {name!r} are over {MAX_READ_BYTES // 2**20} MiB of files; "
                                 "use fewer or smaller frames")
    return total


# ---- reading ------------------------------------------------------------------------------------

def _read_fd(fd: int, name: str) -> bytes:
    size = os.fstat(fd).st_size
    if size > MAX_FILE_BYTES:
        raise ImageTooLargeError(f"{name!r} is {size / 2**20:.0f} MiB; an overlay file may be at most "
                                 f"{MAX_FILE_BYTES // 2**20} MiB")
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def read_trusted(path: str) -> tuple[Files, bool]:
    """A topology's path, read as given: (files, is_folder).  FileError if it is missing."""
    try:
        if os.path.isdir(path):
            names = frame_order(os.listdir(path), path)
            files: Files = []
            total = 0
            for n in names:
                fd = os.open(os.path.join(path, n), os.O_RDONLY)
                try:
                    files.append((n, _read_fd(fd, os.path.join(path, n))))
                finally:
                    os.close(fd)
                total = _add_read(total, files[-1][1], path)
            return files, True
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError as e:
        raise FileError(f"image not found: {path!r} (cwd {os.getcwd()!r}); fix the mark's `path`") from e
    except OSError as e:
        raise FileError(f"cannot read image {path!r}: {e}") from e
    try:
        return [(os.path.basename(path), _read_fd(fd, path))], False
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ConfinedReader:
    """Reads the images a control command names, only from inside `root` and never through a link."""

    root: str

    @classmethod
    def of(cls, path: str) -> ConfinedReader:
        return cls(os.path.realpath(os.path.abspath(path or ".")))

    def check(self, requested: object) -> PurePosixPath:
        """`requested` relative to the root, or InputPathError naming the rule it breaks (no I/O)."""
        where = f"path {requested!r}"
        if not isinstance(requested, str) or not requested or "\0" in requested:
            raise InputPathError("must be a non-empty file or folder name", where=where)
        path = PurePosixPath(requested)
        if ".." in path.parts:
            raise InputPathError(f"`..` is not allowed; give a path inside the assets folder {self.root}",
                                 where=where)
        if path.is_absolute():
            root = PurePosixPath(self.root)
            if root not in path.parents:
                raise InputPathError(f"is outside the assets folder {self.root}; commands may only read images "
                                     "there (set the watermark's `assets_dir` to change it)", where=where)
            path = path.relative_to(root)
        if not path.parts or path.name in ("", "."):
            raise InputPathError("names the assets folder itself, not an image or a folder of frames", where=where)
        if any(part.startswith(".") for part in path.parts):
            raise InputPathError("a hidden name (starting with `.`) is not allowed", where=where)
        if path.suffix and path.suffix.lower() not in SUFFIXES:
            raise InputPathError(f"is not an image type overlays read ({', '.join(SUFFIXES)}, or a folder of "
                                 "numbered frames)", where=where)
        return path

    def read(self, requested: str) -> tuple[Files, bool]:
        """The checked file's bytes (or a folder's frames in order) and whether it was a folder.

        Walks from the root one `openat(O_NOFOLLOW)` at a time: a symbolic link anywhere on the way,
        or in place of the file, is InputPathError; a missing file is FileError."""
        rel = self.check(requested)
        shown = os.path.join(self.root, *rel.parts)
        nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.root, nofollow | os.O_DIRECTORY)
        except OSError as e:
            raise FileError(f"cannot open the assets folder {self.root}: {e}") from e
        try:
            for part in rel.parts:
                try:
                    nxt = os.open(part, nofollow, dir_fd=fd)
                except FileNotFoundError as e:
                    raise FileError(f"image not found: {shown!r}; put it in the assets folder {self.root}") from e
                except OSError as e:  # ELOOP: a symbolic link
                    raise InputPathError(f"cannot be opened without following a link ({e.strerror}); images "
                                         f"must be real files inside {self.root}", where=f"path {requested!r}") from e
                os.close(fd)
                fd = nxt
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                files = []
                total = 0
                for n in frame_order(os.listdir(fd), requested):
                    try:
                        ffd = os.open(n, nofollow, dir_fd=fd)
                    except OSError as e:
                        raise InputPathError(f"frame {n!r} cannot be opened without following a link "
                                             f"({e.strerror})", where=f"path {requested!r}") from e
                    try:
                        if not stat.S_ISREG(os.fstat(ffd).st_mode):
                            raise InputPathError(f"frame {n!r} is not a regular file", where=f"path {requested!r}")
                        files.append((n, _read_fd(ffd, f"{shown}/{n}")))
                    finally:
                        os.close(ffd)
                    total = _add_read(total, files[-1][1], requested)
                return files, True
            if not stat.S_ISREG(mode):
                raise InputPathError("is not a regular file", where=f"path {requested!r}")
            if not rel.suffix:
                raise InputPathError(f"a file needs one of the suffixes {', '.join(SUFFIXES)}",
                                     where=f"path {requested!r}")
            return [(rel.name, _read_fd(fd, shown))], False
        finally:
            os.close(fd)


def probe(files: Files, folder: bool, name: str) -> tuple[int, int, int]:
    """(width, height, frames) from the headers alone (no pixel is decoded), with the size limits
    checked: what a command can be answered with at once, before the decoding that may take a while."""
    if folder:
        if not files:
            raise ImageDecodeError(f"folder {name!r} holds no image ({', '.join(SUFFIXES)})")
        if len(files) > MAX_FRAMES:
            raise ImageTooLargeError(f"folder {name!r} holds {len(files)} frames; at most {MAX_FRAMES}")
        w, h = _open(files[0][1], f"{name}/{files[0][0]}").size
        _check_size(w, h, len(files), name)
        return w, h, len(files)
    im = _open(files[0][1], name)
    w, h = im.size
    _check_size(w, h, 1, name)
    try:
        n = int(getattr(im, "n_frames", 1) or 1)
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageDecodeError(f"cannot read the frames of {name!r}: {type(e).__name__}: {e}") from e
    _check_size(w, h, n, name)
    return w, h, n


def load(files: Files, folder: bool, name: str, fps: float = 0.0) -> MarkImage:
    """Decode what `read_trusted` / `ConfinedReader.read` returned."""
    if folder:
        return decode_folder(files, name, fps or FOLDER_FPS)
    return decode_image(files[0][1], name)
