"""Resolution presets (1080p .. 180p) and the frame size a preset gives a picture.

A preset names a frame height; the width follows the picture's aspect ratio, and both are even
(H.264 in yuv420p needs that).  A preset never enlarges: above the picture's own height it gives
the picture's size.  `video_encoder`'s live `resolution` option and the rate controller's steps
(`actors/rtmp_sender/rate.py`) use these::

    >>> scaled_size(1280, 720, "360p")
    (640, 360)
    >>> scaled_size(1280, 720, "480p")
    (854, 480)
    >>> scaled_size(1280, 720, "1080p")  # no upscaling
    (1280, 720)
"""

from __future__ import annotations

from .errors import OptionError

#: (name, height), largest first
RESOLUTIONS: tuple[tuple[str, int], ...] = (("1080p", 1080), ("720p", 720), ("540p", 540), ("480p", 480),
                                            ("360p", 360), ("240p", 240), ("180p", 180))
RESOLUTION_NAMES: tuple[str, ...] = tuple(name for name, _ in RESOLUTIONS)
SOURCE = "source"  # no scaling: the input's own size


def preset_height(name: str) -> int:
    """The frame height of preset `name` ("720p" -> 720)."""
    for preset, height in RESOLUTIONS:
        if preset == name:
            return height
    raise OptionError(f"unknown resolution {name!r}: one of {', '.join((SOURCE, *RESOLUTION_NAMES))}")


def nearest_preset(height: int) -> str:
    """The preset nearest to a frame height (544 -> "540p")."""
    return min(RESOLUTIONS, key=lambda p: abs(p[1] - height))[0]


def scaled_size(width: int, height: int, name: str) -> tuple[int, int]:
    """The size preset `name` (or "source") gives a `width` x `height` picture: the preset's height,
    never above `height`, and the width that keeps the aspect ratio, both rounded to even."""
    if name == SOURCE:
        return width, height
    h = min(preset_height(name), height)
    if h == height:
        return width, height
    h -= h % 2
    w = max(2, round(width * h / height / 2) * 2)
    return w, h
