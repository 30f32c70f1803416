"""The bad-input corpus: media files and servers that are broken in the ways real inputs are.

Everything is generated (Debian's ffmpeg, or a few lines of Python) into a folder on first use, so
nothing binary is committed.  `build(folder)` returns name -> path; `GarbageRtmpServer` is an RTMP
server that completes the handshake and then sends garbage.

    truncated.mp4 / .flv / .mp3   a valid file cut in half (MP4: its moov index at the end is lost)
    corrupt.mp4 / .flv / .mp3     headers overwritten with random bytes
    empty.mp4                     zero bytes
    png_named.mp4, text_named.flv wrong extensions (an image, a text file)
    huge.png                      16384 x 16384 pixels (a few kB: 1-bit greyscale, compressed)
    ends_early.mp4                video for 1 s, audio for 6 s: the video stream ends early
    missing_segments.m3u8         an HLS playlist whose segments do not exist
"""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import threading
import zlib
from pathlib import Path
from types import TracebackType

CASES = ("truncated.mp4", "truncated.flv", "truncated.mp3", "corrupt.mp4", "corrupt.flv", "corrupt.mp3",
         "empty.mp4", "png_named.mp4", "text_named.flv", "huge.png", "ends_early.mp4", "missing_segments.m3u8")


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True, timeout=120)


def _truncate(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


def _corrupt(src: Path, dst: Path, seed: int) -> None:
    data = bytearray(src.read_bytes())
    rng = random.Random(seed)
    data[0:64] = rng.randbytes(64)  # the headers that say what the file is
    for _ in range(64):  # and some of the rest
        at = rng.randrange(64, len(data) - 16)
        data[at:at + 16] = rng.randbytes(16)
    dst.write_bytes(bytes(data))


def huge_png(path: Path, side: int = 16384) -> None:
    """A valid PNG of side x side pixels, 1-bit greyscale, all black: small on disk, 768 MB as RGB."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" + bytes(side // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def build(folder: Path) -> dict[str, Path]:
    """Generate every case into `folder` (once) and return name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {name: folder / name for name in CASES}
    if all(p.exists() for p in out.values()):
        return out
    good = {ext: folder / f"good.{ext}" for ext in ("mp4", "flv", "mp3")}
    av_in = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    _ffmpeg(*av_in, "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(good["mp4"]))
    _ffmpeg(*av_in, "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(good["flv"]))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "3", "-c:a", "libmp3lame",
            str(good["mp3"]))
    for i, ext in enumerate(("mp4", "flv", "mp3")):
        _truncate(good[ext], out[f"truncated.{ext}"])
        _corrupt(good[ext], out[f"corrupt.{ext}"], seed=i)
    out["empty.mp4"].write_bytes(b"")
    huge_png(out["huge.png"])
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:size=64x64", "-frames:v", "1", "-f", "image2", "-c:v", "png",
            str(out["png_named.mp4"]))
    out["text_named.flv"].write_text("this is not a video\n" * 20)
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15:duration=1", "-f", "lavfi", "-i",
            "sine=frequency=440:sample_rate=44100:duration=6", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
            str(out["ends_early.mp4"]))
    out["missing_segments.m3u8"].write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
        + "".join(f"#EXTINF:1.0,\nmissing{i}.ts\n" for i in range(5)) + "#EXT-X-ENDLIST\n")
    for p in good.values():
        p.unlink()
    return out


class GarbageRtmpServer:
    """An RTMP server on 127.0.0.1 (free port) that answers the handshake (S0, S1, S2) and then sends
    random bytes.  Stops its thread and closes its sockets on exit."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="garbage-rtmp", daemon=True)

    def url(self, stream: str = "test") -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{stream}"

    def __enter__(self) -> GarbageRtmpServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(2.0)
                try:
                    c0c1 = b""
                    while len(c0c1) < 1537:
                        part = conn.recv(1537 - len(c0c1))
                        if not part:
                            break
                        c0c1 += part
                    conn.sendall(b"\x03" + bytes(8) + os.urandom(1528) + c0c1[1:1537])  # S0 S1 S2
                    conn.recv(1536)  # C2
                    for _ in range(64):
                        conn.sendall(os.urandom(4096))
                except OSError:
                    continue
