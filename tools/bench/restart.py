"""Benchmark `restart`: SIGKILL the filter of a live push; time to the new filter's first frame out.

The engine pushes `src -> filt -> venc -> push` (+ audio) to nginx-rtmp while a puller decodes the
stream.  Every few seconds (longer than the supervisor's `stable_s`, so no backoff applies) the
benchmark SIGKILLs `filt` (its pid from `ps`) and measures, on CLOCK_MONOTONIC:

- detect / started: SIGKILL -> the supervisor's `exited` / `started` events arriving (PUB, so an
  upper bound), and -> the restarted filter's `setup()` done (its own clock reading);
- first frame out: SIGKILL -> the `first_frame_out` event time of the restarted filter
  (`bench_overlay` = the real overlay + that event, taken as it emits its first frame);
- the longest gap between decoded frames at the puller around the kill (the viewer's stall), and the
  longest stretch without a new picture (counter not advancing: frames lost or repeated).
Compared in the same run with the puller's gaps when nothing is killed (the steady-state baseline).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from tools.rtmp_server import RtmpServer

from ._common import Result, Settings, Spread, Table, Target, fmt_ms, fmt_x, max_gap
from ._engine import BenchEngine, EventWatcher
from ._puller import Puller
from ._push import bench_push_topology

NAME = "restart"
VICTIM = "filt"


def gaps(frames: list[list[float]], start: float, end: float) -> tuple[float, float]:
    """(longest arrival gap, longest time without a new counter) among frames received in [start, end]."""
    sel = [(f[0], f[3]) for f in frames if start <= f[3] <= end]
    arrival = max_gap([m for _c, m in sel])
    frozen = 0.0
    last_new: float | None = None
    last_counter: float | None = None
    for c, m in sel:
        if last_counter is None or c > last_counter:
            if last_new is not None:
                frozen = max(frozen, m - last_new)
            last_new, last_counter = m, c
    return arrival, frozen


def run(settings: Settings) -> Result:
    res = Result(NAME)
    kills = settings.n(5, 2)
    spacing = settings.secs(3.0, 2.5)
    work = Path(settings.workdir)
    server = RtmpServer(work / "rtmp-restart")
    server.start()
    rows: list[dict[str, Any]] = []
    try:
        topo = bench_push_topology(server.url(stream="restart"), with_filter=True)
        puller = Puller(server.url(stream="restart"), work / "pull-restart.json")
        try:
            with BenchEngine.start(topo, settings.workdir) as eng:
                eng.wait_running()
                info = eng.info()
                assert info is not None
                with EventWatcher(str(info["events"])) as events:
                    time.sleep(settings.secs(4.0, 3.0))
                    base_start = time.monotonic()
                    time.sleep(spacing)
                    base_end = time.monotonic()
                    for _ in range(kills):
                        pid = eng.node_pids()[VICTIM]
                        events.drain()
                        t_kill = time.monotonic_ns()
                        os.kill(pid, signal.SIGKILL)
                        first = events.wait_for(lambda e, t=t_kill: e.get("node") == VICTIM
                                                and e.get("name") == "first_frame_out"
                                                and int(e["data"]["mono_ns"]) > t, 10)
                        def seen(name: str, t: int = t_kill) -> float:
                            ev = next((e for e in events.events if e.get("node") == VICTIM
                                       and e.get("name") == name and e["recv_mono_ns"] > t), None)
                            return (ev["recv_mono_ns"] - t) / 1e9 if ev else float("nan")

                        rows.append({"t_kill": t_kill / 1e9,
                                     "first_frame_s": (int(first["data"]["mono_ns"]) - t_kill) / 1e9,
                                     "setup_s": (int(first["data"]["setup_ns"]) - t_kill) / 1e9,
                                     "detect_s": seen("exited"), "started_s": seen("started")})
                        time.sleep(spacing)
                    eng.check_alive()
                    restarts = next(n["restarts"] for n in eng.ps()["nodes"] if n["id"] == VICTIM)
                doc = puller.stop()
                eng.stop()
        finally:
            puller.kill()
    finally:
        server.stop()

    frames = doc["frames"]
    for r in rows:
        r["gap_s"], r["frozen_s"] = gaps(frames, r["t_kill"] - 0.5, r["t_kill"] + 1.5)
    base_gap, base_frozen = gaps(frames, base_start, base_end)
    table = Table(["measure", "per kill: median [min..max]", "no kill (baseline)"])
    detect = Spread.of([r["detect_s"] for r in rows])
    back = Spread.of([r["first_frame_s"] for r in rows])
    gap = Spread.of([r["gap_s"] for r in rows])
    frozen = Spread.of([r["frozen_s"] for r in rows])
    table.add("SIGKILL -> `exited` event seen", detect.fmt(fmt_ms), "-")
    started = Spread.of([r["started_s"] for r in rows])
    setup = Spread.of([r["setup_s"] for r in rows])
    table.add("SIGKILL -> `started` event seen (new process)", started.fmt(fmt_ms), "-")
    table.add("SIGKILL -> restarted filter's setup() done", setup.fmt(fmt_ms), "-")
    table.add("SIGKILL -> restarted filter's first frame out", back.fmt(fmt_ms), "-")
    table.add("longest gap between decoded frames at the puller", gap.fmt(fmt_ms), fmt_ms(base_gap))
    table.add("longest time without a new picture at the puller", frozen.fmt(fmt_ms), fmt_ms(base_frozen))
    res.tables.append((f"{len(rows)} SIGKILLs of `{VICTIM}` during a 720p30 push ({restarts} restarts counted by "
                       "the supervisor)", table))
    worst_gap = max((r["gap_s"] for r in rows), default=float("nan"))
    res.targets = [
        Target("time to first frame out (ms, absolute)", back.median * 1e3, "<=", 100, fmt_ms(back.median)),
        Target("longest gap at the puller (ms, absolute)", worst_gap * 1e3, "<=", 200, fmt_ms(worst_gap)),
    ]
    res.data = {"kills": rows, "baseline_gap_s": base_gap, "baseline_frozen_s": base_frozen}
    res.headline = (f"filter back {fmt_ms(back.median)} after SIGKILL (median of {len(rows)}); worst puller gap "
                    f"{fmt_ms(worst_gap)} = {fmt_x(worst_gap / base_gap if base_gap else float('nan'))} the "
                    "steady-state gap")
    return res
