"""Machine-readable frame stamps: a frame counter and a wall-clock time burned into the picture.

A stamp is a grid of black and white cells in the top-left corner of an rgb24 frame.  It carries a
32-bit frame counter and a 48-bit wall-clock time (milliseconds since the Unix epoch), protected by a
CRC-16, so a test or a monitor can read back, from the stream a server relays, which source frame it
is looking at and when it was made (glass-to-glass latency, dropped or repeated frames).

Layout (16 columns x 7 rows of square cells, MSB first, row-major)::

    row 0       sync: white, black, white, black, ... (16 cells)
    rows 1-2    counter, 32 bits
    rows 3-5    wall_ms, 48 bits
    row 6       CRC-16/CCITT-FALSE over the 10 bytes counter (4, big endian) + wall_ms (6, big endian)

The cell size is proportional to the frame: `min(width, height) / 45` pixels (8 px at 640x360, 16 px at
1280x720, 4 px at 320x180), but never below 4 px.  So the stamp covers `16 * cell` x `7 * cell` pixels:
128x56 at 640x360, 256x112 at 1280x720, 64x28 at 320x180 (about 36% of the short side wide and 16% of
it tall); see `stamp_size`.  Because the cell scales with the frame, a stamp still reads after the
picture is resized (same aspect ratio).

Why it survives compression: the cells are pure black and pure white (luma 0/255 with neutral chroma, so
4:2:0 chroma subsampling does not touch them), at least 4 px wide, and `read` averages only the inner
half of each cell and thresholds against the sync row's own black and white levels.  Checked in
tests/unit/test_stamp.py by a libx264 round trip at 300 kbit/s at 320x180, 640x360 and 1280x720.

    burn(img, counter, wall_ms) -> None       in place
    read(img) -> Stamp | None                 None when there is no valid stamp (sync or CRC fails)
"""

from __future__ import annotations

import binascii
from functools import lru_cache
from typing import Any, NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["COLS", "ROWS", "Stamp", "burn", "cell_size", "read", "stamp_size"]

COLS = 16
ROWS = 7
_CELLS_PER_SHORT_SIDE = 45.0
_MIN_CELL = 4.0
_COUNTER_BITS = 32
_WALL_BITS = 48
_CRC_BITS = 16
_MIN_CONTRAST = 64.0  # white sync cells must be this much brighter than black ones (of 255)

_SYNC = np.arange(COLS) % 2 == 0  # white, black, white, ...


class Stamp(NamedTuple):
    """What a stamp carries."""

    counter: int  # frame counter modulo 2**32
    wall_ms: int  # wall-clock time in ms since the Unix epoch, modulo 2**48


def cell_size(height: int, width: int) -> float:
    """Cell edge in pixels (fractional) for a frame of this size."""
    return max(_MIN_CELL, min(height, width) / _CELLS_PER_SHORT_SIDE)


def stamp_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) in pixels of the top-left region the stamp covers."""
    c = cell_size(height, width)
    return round(ROWS * c), round(COLS * c)


def _crc16(payload: bytes) -> int:
    return binascii.crc_hqx(payload, 0xFFFF)


def _bits(value: int, n: int) -> list[bool]:
    return [bool((value >> (n - 1 - i)) & 1) for i in range(n)]


def _payload(counter: int, wall_ms: int) -> bytes:
    return counter.to_bytes(4, "big") + wall_ms.to_bytes(6, "big")


def _check_fits(height: int, width: int) -> None:
    sh, sw = stamp_size(height, width)
    if sh > height or sw > width:
        raise ValueError(f"a {width}x{height} frame is too small for a {sw}x{sh} stamp")


@lru_cache(maxsize=16)
def _sample_windows(height: int, width: int) -> tuple[tuple[int, int, int, int], ...]:
    """The inner half of each cell (y0, y1, x0, x1), row-major."""
    c = cell_size(height, width)
    out = []
    for r in range(ROWS):
        for k in range(COLS):
            y0, y1 = round((r + 0.25) * c), round((r + 0.75) * c)
            x0, x1 = round((k + 0.25) * c), round((k + 0.75) * c)
            out.append((y0, max(y1, y0 + 1), x0, max(x1, x0 + 1)))
    return tuple(out)


def burn(img: NDArray[np.uint8], counter: int, wall_ms: int) -> None:
    """Draw the stamp for (counter mod 2**32, wall_ms mod 2**48) into the top-left of `img`, in place.

    `img` is HxWx3 uint8 (HxW grey works too).  Raises ValueError if the frame is smaller than the
    stamp (below 64x28 px).
    """
    counter %= 1 << _COUNTER_BITS
    wall_ms %= 1 << _WALL_BITS
    payload = _payload(counter, wall_ms)
    bits = _bits(counter, _COUNTER_BITS) + _bits(wall_ms, _WALL_BITS) + _bits(_crc16(payload), _CRC_BITS)
    grid = np.empty((ROWS, COLS), dtype=np.uint8)
    grid[0] = _SYNC
    grid[1:] = np.array(bits, dtype=np.uint8).reshape(ROWS - 1, COLS)
    grid *= 255
    height, width = img.shape[:2]
    _check_fits(height, width)
    sh, sw = stamp_size(height, width)
    block = cv2.resize(grid, (sw, sh), interpolation=cv2.INTER_NEAREST)
    if img.ndim == 3 and img.shape[2] == 3:
        img[:sh, :sw] = cv2.cvtColor(block, cv2.COLOR_GRAY2RGB)
    elif img.ndim == 3:
        img[:sh, :sw] = block[:, :, None]
    else:
        img[:sh, :sw] = block


def read(img: NDArray[Any]) -> Stamp | None:
    """The stamp in the top-left of `img`, or None if there is none (or it is damaged)."""
    if img.ndim not in (2, 3):
        return None
    try:
        _check_fits(img.shape[0], img.shape[1])
    except ValueError:
        return None
    windows = _sample_windows(img.shape[0], img.shape[1])
    levels = np.fromiter((float(img[y0:y1, x0:x1].mean()) for y0, y1, x0, x1 in windows),
                         dtype=np.float64, count=ROWS * COLS).reshape(ROWS, COLS)
    white = levels[0, _SYNC]
    black = levels[0, ~_SYNC]
    if white.min() - black.max() < _MIN_CONTRAST:
        return None
    threshold = (white.mean() + black.mean()) / 2.0
    bits = (levels[1:] > threshold).ravel()
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    crc = value & 0xFFFF
    wall_ms = (value >> _CRC_BITS) & ((1 << _WALL_BITS) - 1)
    counter = value >> (_CRC_BITS + _WALL_BITS)
    if _crc16(_payload(counter, wall_ms)) != crc:
        return None
    return Stamp(counter, wall_ms)
