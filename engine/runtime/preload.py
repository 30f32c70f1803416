"""Imported once by the fork server, so every actor process starts with heavy modules loaded.

Starting an actor then costs a fork (about 10 ms here) instead of importing numpy, PyAV and OpenCV
again (about 190 ms); see shared notes on restart cost.  The modules the topology's kinds declare in
`Actor.preload` (the supervisor names them in `PRELOAD_ENV`) are imported too: mediapipe for `beauty`
costs about 0.5 s, which a restarted node would otherwise spend with its input stalled.
"""

from __future__ import annotations

import contextlib
import importlib
import os

import av  # noqa: F401
import cv2  # noqa: F401
import msgpack  # noqa: F401
import numpy  # noqa: F401
import zmq  # noqa: F401

from ..topology.registry import all_kinds
from . import actor_runtime  # noqa: F401  (the code every actor process runs)
from .spec import PRELOAD_ENV

with contextlib.suppress(Exception):  # a broken actor module is reported when that kind starts
    all_kinds()

for _name in filter(None, os.environ.get(PRELOAD_ENV, "").split(",")):
    with contextlib.suppress(Exception):  # a module that does not import is reported by the kind's setup
        importlib.import_module(_name)
