"""Per-actor metrics kept by the runtime and sent to the supervisor once a second.

fps in/out per pad, drops per edge, processing time per frame (median/p95 over the last window),
CPU % and RSS of the process.  Counters are totals since the process started; rates are over the
last reporting interval.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class ActorMetrics:
    def __init__(self, node: str) -> None:
        self.node = node
        self.frames_in: Counter[str] = Counter()
        self.frames_out: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self.proc_ns: deque[int] = deque(maxlen=300)
        self._last_t = time.monotonic()
        self._last_cpu = self._cpu()
        self._last_in: Counter[str] = Counter()
        self._last_out: Counter[str] = Counter()
        self.started = time.monotonic()

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system

    def frame_in(self, pad: str) -> None:
        self.frames_in[pad] += 1

    def frame_out(self, pad: str) -> None:
        self.frames_out[pad] += 1

    def drop(self, where: str) -> None:
        self.drops[where] += 1

    def count(self, name: str) -> None:
        self.counters[name] += 1

    def processing_time(self, ns: int) -> None:
        self.proc_ns.append(ns)

    def snapshot(self, queues: dict[str, Any] | None = None) -> dict[str, Any]:
        now = time.monotonic()
        cpu = self._cpu()
        dt = max(now - self._last_t, 1e-6)
        fps_in = {p: (n - self._last_in[p]) / dt for p, n in self.frames_in.items()}
        fps_out = {p: (n - self._last_out[p]) / dt for p, n in self.frames_out.items()}
        cpu_pct = 100.0 * (cpu - self._last_cpu) / dt
        self._last_t, self._last_cpu = now, cpu
        self._last_in, self._last_out = Counter(self.frames_in), Counter(self.frames_out)
        times = sorted(self.proc_ns)
        med = times[len(times) // 2] / 1e6 if times else 0.0
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))] / 1e6 if times else 0.0
        total_in = sum(self.frames_in.values())
        total_drops = sum(self.drops.values())
        return {
            "fps_in": {p: round(v, 2) for p, v in fps_in.items()},
            "fps_out": {p: round(v, 2) for p, v in fps_out.items()},
            "frames_in": dict(self.frames_in),
            "frames_out": dict(self.frames_out),
            "drops": dict(self.drops),
            "drop_pct": round(100.0 * total_drops / max(1, total_in + total_drops), 2),
            "proc_ms_median": round(med, 3),
            "proc_ms_p95": round(p95, 3),
            "cpu_pct": round(cpu_pct, 1),
            "rss_bytes": _rss_bytes(),
            "uptime_s": round(now - self.started, 3),
            "queues": queues or {},
            "counters": dict(self.counters),
        }
