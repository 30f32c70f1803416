"""Imported once by the fork server, so every actor process starts with heavy modules loaded.

Starting an actor then costs a fork (about 10 ms here) instead of importing numpy, PyAV and OpenCV
again (about 190 ms); see shared notes on restart cost.
"""

from __future__ import annotations

import contextlib

import av  # noqa: F401
import cv2  # noqa: F401
import msgpack  # noqa: F401
import numpy  # noqa: F401
import zmq  # noqa: F401

from ..topology.registry import all_kinds
from . import actor_runtime  # noqa: F401  (the code every actor process runs)

with contextlib.suppress(Exception):  # a broken actor module is reported when that kind starts
    all_kinds()
