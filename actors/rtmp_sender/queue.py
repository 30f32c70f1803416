"""The RTMP sender's send queue: a bounded backlog that drops non-key video first, the per-connection
start gate, and a sliding rate window.  Pure logic, no I/O (part of the rtmp_sender kind).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from mediaengine.sdk.formats import NS, Packet

Kind = Literal["video", "audio"]
MAX_VIDEO_SHIFT_MS = 200  # how far the start gate may shift early video on a new connection


def to_ns(ts: int, time_base: Fraction) -> int:
    """A timestamp in `time_base` as integer nanoseconds (floor)."""
    return math.floor(ts * time_base * NS)


@dataclass
class Item:
    """One queued packet."""

    kind: Kind
    packet: Packet
    dts_ns: int  # on the engine timeline
    sei: tuple[tuple[int, bool], ...] = ()  # (message id, last repetition) carried by this packet

    @property
    def key(self) -> bool:
        return self.packet.keyframe

    @property
    def droppable(self) -> bool:
        return self.kind == "video" and not self.packet.keyframe


class Backlog:
    """The send queue with its drop policy (not thread-safe: the caller holds a lock).

    `push` returns what it dropped.  Beyond `video_drop_ns` of queued video, non-keyframe video goes
    first (the rest of the oldest GOP, then incoming video until a keyframe); beyond `limit_ns`, the
    oldest packets go, whatever they are, with the video that depends on a dropped keyframe.
    """

    def __init__(self, limit_ns: int, video_drop_ns: int) -> None:
        self.limit_ns = limit_ns
        self.video_drop_ns = video_drop_ns
        self.items: deque[Item] = deque()
        self.need_key = False  # drop incoming non-keyframe video until a keyframe comes
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.items)

    def span_ns(self) -> int:
        """Media time covered by the queue: newest minus oldest timestamp."""
        if len(self.items) < 2:
            return 0
        oldest = min(self._first_of(k) for k in ("video", "audio"))
        newest = max(self._last_of(k) for k in ("video", "audio"))
        return max(0, newest - oldest)

    def video_span_ns(self) -> int:
        """Media time covered by the queued video alone: dropping video cannot shorten a queue that is
        audio (after a cut dropped the queued video, fresh video waits only behind the audio still
        queued, which drains by itself; measured over both, each fresh picture would be dropped until
        the next keyframe)."""
        first, last = self._first_of("video"), self._last_of("video")
        return max(0, last - first) if first <= last else 0

    def _first_of(self, kind: Kind) -> int:
        for it in self.items:
            if it.kind == kind:
                return it.dts_ns
        return 2**62

    def _last_of(self, kind: Kind) -> int:
        for it in reversed(self.items):
            if it.kind == kind:
                return it.dts_ns
        return -(2**62)

    def push(self, item: Item) -> list[Item]:
        if item.kind == "video":
            if item.key:
                self.need_key = False
            elif self.need_key:
                return [item]
        self.items.append(item)
        self.bytes += len(item.packet.data)
        dropped: list[Item] = []
        if self.video_drop_ns and item.droppable and self.video_span_ns() > self.video_drop_ns:
            dropped += self._drop_video_run(self._index_of_first_droppable())
        while self.span_ns() > self.limit_ns:
            head = self.items.popleft()
            self.bytes -= len(head.packet.data)
            dropped.append(head)
            if head.kind == "video" and head.key:
                dropped += self._drop_video_run(0)
        return dropped

    def pop(self) -> Item | None:
        if not self.items:
            return None
        item = self.items.popleft()
        self.bytes -= len(item.packet.data)
        return item

    def clear(self) -> list[Item]:
        items = list(self.items)
        self.items.clear()
        self.bytes = 0
        return items

    def drop_video(self) -> list[Item]:
        """Drop every queued non-keyframe video packet, and incoming ones until a keyframe comes."""
        kept: deque[Item] = deque()
        dropped: list[Item] = []
        for it in self.items:
            if it.droppable:
                dropped.append(it)
                self.bytes -= len(it.packet.data)
            else:
                kept.append(it)
        self.items = kept
        self.need_key = True
        return dropped

    def _index_of_first_droppable(self) -> int:
        for i, it in enumerate(self.items):
            if it.droppable:
                return i
        return len(self.items)

    def _drop_video_run(self, start: int) -> list[Item]:
        """Drop non-keyframe video from index `start` up to the next keyframe; without one in the
        queue, incoming video waits for the next keyframe too."""
        kept: deque[Item] = deque()
        dropped: list[Item] = []
        reached_key = False
        for i, it in enumerate(self.items):
            if i >= start and not reached_key and it.kind == "video":
                if it.key:
                    reached_key = True
                else:
                    dropped.append(it)
                    self.bytes -= len(it.packet.data)
                    continue
            kept.append(it)
        self.items = kept
        if not reached_key:
            self.need_key = True
        return dropped


class StartGate:
    """Per connection: which packets FLV accepts, and the video shift (see "Timeline").

    Timestamps given to `admit` are the connection's output times in ns (audio offset included).
    Returns (send, video_shift_ns, reason).
    """

    def __init__(self, has_video: bool, max_shift_ns: int = MAX_VIDEO_SHIFT_MS * 1_000_000) -> None:
        self.need_key = has_video
        self.floor_ns: int | None = None  # the connection's first packet: nothing older is accepted
        self.shift_ns = 0
        self.max_shift_ns = max_shift_ns
        self.last_ns: dict[str, int] = {}

    def admit(self, kind: Kind, t_ns: int, key: bool) -> tuple[bool, int, str]:
        if kind == "video":
            if self.need_key:
                if not key:
                    return False, 0, "waiting_keyframe"
                if self.floor_ns is not None and t_ns < self.floor_ns:
                    shift = self.floor_ns - t_ns
                    if shift > self.max_shift_ns:
                        return False, 0, "late"
                    self.shift_ns = shift
                self.need_key = False
            t_ns += self.shift_ns
        if (self.floor_ns is not None and t_ns < self.floor_ns) or t_ns <= self.last_ns.get(kind, -(2**62)):
            if kind == "video":
                self.need_key = True  # the frames after it refer to it
            return False, 0, "late"
        if self.floor_ns is None:
            self.floor_ns = t_ns
        self.last_ns[kind] = t_ns
        return True, self.shift_ns if kind == "video" else 0, ""


class RateWindow:
    """Sum of values over a sliding time window (bit rates, throughput)."""

    def __init__(self, window_ns: int) -> None:
        self.window_ns = window_ns
        self.samples: deque[tuple[int, float]] = deque()

    def add(self, now_ns: int, value: float) -> None:
        self.samples.append((now_ns, value))
        self._trim(now_ns)

    def _trim(self, now_ns: int) -> None:
        while self.samples and self.samples[0][0] <= now_ns - self.window_ns:
            self.samples.popleft()

    def total(self, now_ns: int) -> float:
        self._trim(now_ns)
        return sum(v for _, v in self.samples)

    def values(self, now_ns: int) -> list[float]:
        self._trim(now_ns)
        return [v for _, v in self.samples]
