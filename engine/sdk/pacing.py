"""Source pacing on the engine clock: which frames are due at engine time `now_ns`.

Sources derive frame indices from the engine's shared clock (nanoseconds since the engine's epoch,
the same in every actor process), so a restarted source continues the same timeline.  A source that
fell a little behind catches up (emits the missed frames); one that fell far behind (a restart, a
stall) jumps to the current frame instead, which shows as a gap in the frame counter.
"""

from __future__ import annotations

import math

from .formats import NS

MAX_CATCHUP_FRAMES = 5  # video frames a late source still emits rather than skips
MAX_CATCHUP_NS = NS // 2  # audio a late source still emits rather than skips


def video_indices_due(next_index: int | None, now_ns: int, interval_ns: int,
                      max_catchup: int = MAX_CATCHUP_FRAMES) -> list[int]:
    """The frame indices a video source emits at engine time `now_ns`.

    `next_index` is the first index not emitted yet (None before the first frame).  The current
    index is `now_ns // interval_ns`; up to `max_catchup` missed frames before it are emitted too,
    otherwise only the current one (a jump, e.g. after a restart).  Empty if nothing is due yet.
    """
    current = now_ns // interval_ns
    if next_index is None or current - next_index > max_catchup:
        return [current]
    return list(range(next_index, current + 1))


def audio_frames_due(next_frame: int | None, now_ns: int, rate: int, samples_per_frame: int,
                     max_catchup_ns: int = MAX_CATCHUP_NS) -> list[int]:
    """The audio frame indices due at engine time `now_ns` (frame i starts at sample i*spf).

    A frame is due once its first sample's time has come.  `next_frame` is the first frame not
    emitted yet (None before the first); if more than `max_catchup_ns` of frames were missed, only
    the current frame is returned (a jump).
    """
    current = (now_ns * rate // NS) // samples_per_frame
    max_frames = math.ceil(max_catchup_ns * rate / NS / samples_per_frame)
    if next_frame is None or current - next_frame > max_frames:
        return [current]
    return list(range(next_frame, current + 1))
