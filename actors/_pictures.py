"""Helpers shared by the actors that hold pictures between frames (compositor, switcher, preview).

Not a kind (the leading underscore keeps it out of the registry).  A frame delivered to `on_frame` is
a view of a ring slot that is released when the hook returns, so an actor that shows an input's
picture later (on its own clock) keeps a copy: `LatestPicture` keeps one preallocated buffer per
input and copies into it (no per-frame allocation; a new buffer only when the size changes).
"""

from __future__ import annotations

import re

import numpy as np
from numpy.typing import NDArray

RGB = tuple[int, int, int]

_NAMED: dict[str, RGB] = {
    "white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0), "green": (0, 255, 0),
    "blue": (0, 0, 255), "yellow": (255, 255, 0), "cyan": (0, 255, 255), "magenta": (255, 0, 255),
    "gray": (128, 128, 128), "grey": (128, 128, 128),
}
_HEX = re.compile(r"#?([0-9a-fA-F]{6})")


def parse_color(value: str) -> RGB:
    """'#rrggbb', 'rrggbb' or a colour name -> (r, g, b).  Raises ValueError naming the choices."""
    v = value.strip().lower()
    if v in _NAMED:
        return _NAMED[v]
    m = _HEX.fullmatch(v)
    if not m:
        raise ValueError(f"not a colour: {value!r} (use '#rrggbb' or one of {', '.join(sorted(_NAMED))})")
    n = int(m.group(1), 16)
    return (n >> 16) & 255, (n >> 8) & 255, n & 255


class LatestPicture:
    """The newest picture of one input, copied out of its ring slot.

    `version` grows with every frame kept, so a consumer can cache what it derived from the picture
    (a resized layer) until a newer one arrives; `arrived_ns` is the engine time of the last frame.
    """

    def __init__(self) -> None:
        self.picture: NDArray[np.uint8] | None = None
        self.version = 0
        self.arrived_ns = 0
        self.ended = False

    def keep(self, data: NDArray[np.uint8], now_ns: int, *, owned: bool = False) -> None:
        """Copy `data` (HxWx3 uint8) into the preallocated buffer (a new one only on a size change);
        `owned`: `data` is a fresh array of the caller's (e.g. a resize's result), kept without a copy."""
        if owned:
            self.picture = data
        else:
            if self.picture is None or self.picture.shape != data.shape:
                self.picture = np.empty(data.shape, dtype=np.uint8)
            np.copyto(self.picture, data)
        self.version += 1
        self.arrived_ns = now_ns
        self.ended = False
