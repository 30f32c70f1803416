"""CPU and memory of a process tree, sampled from /proc through psutil, and killing a tree for sure.

`TreeSampler` adds up user+system CPU seconds of a root process and all its descendants over a
window (a process seen at the start counts from its value then, one born later from zero; a process
that ends between samples keeps its last sampled value, so sample often enough), and tracks the peak
of the summed RSS and PSS (PSS shares pages among the processes that map them, so forked actors that
share the fork server's preloaded modules are not counted N times).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import psutil


def _key(p: psutil.Process) -> tuple[int, float]:
    return p.pid, p.create_time()


def tree(root: int) -> list[psutil.Process]:
    """The root and every descendant still alive (empty if the root is gone)."""
    try:
        proc = psutil.Process(root)
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@dataclass
class _Seen:
    name: str
    start_cpu: float
    last_cpu: float


@dataclass
class TreeSampler:
    """Sample a process tree in a background thread every `interval_s` between `start()` and `stop()`."""

    roots: list[int]
    interval_s: float = 0.5
    with_pss: bool = True
    seen: dict[tuple[int, float], _Seen] = field(default_factory=dict)
    peak_rss: int = 0
    peak_pss: int = 0
    t_start: float = 0.0
    t_stop: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _first: bool = True

    def sample(self) -> None:
        rss = pss = 0
        for root in self.roots:
            for p in tree(root):
                try:
                    with p.oneshot():
                        t = p.cpu_times()
                        cpu = t.user + t.system
                        name = p.name()
                        if self.with_pss:
                            mem = p.memory_full_info()
                            rss += mem.rss
                            pss += getattr(mem, "pss", mem.rss)
                        else:
                            rss += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue
                k = _key(p)
                if k in self.seen:
                    self.seen[k].last_cpu = cpu
                else:
                    self.seen[k] = _Seen(name, cpu if self._first else 0.0, cpu)
        self._first = False
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        self.sample()
        self.t_start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sample()
        self.t_stop = time.monotonic()

    @property
    def cpu_s(self) -> float:
        return sum(s.last_cpu - s.start_cpu for s in self.seen.values())

    @property
    def wall_s(self) -> float:
        return self.t_stop - self.t_start

    def cpu_by_pid(self) -> dict[int, float]:
        return {pid: s.last_cpu - s.start_cpu for (pid, _), s in self.seen.items()}


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux prctl; no-op elsewhere).

    Used as `preexec_fn` for the engines, pullers and feeders a benchmark starts, and at the start of
    its worker processes, so a benchmark that is killed outright does not leave them running.
    """
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def kill_tree(root: int, *, group: bool = True, timeout_s: float = 5.0) -> None:
    """SIGKILL a process, its process group (when it leads one) and every descendant; wait for them."""
    procs = tree(root)
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(root, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=timeout_s)
