"""Benchmark `chain`: source -> 2 pass-through filters -> sink at 1080p, in the real engine.

Why the real engine and benchmark-only kinds (`tools/bench/_kinds.py`): the figure that matters is
what a frame pays per hop in the engine as it runs (supervisor, fork-server processes, the runtime's
poll loop, rings, descriptors, drop/block policies), not in a hand-built copy of it; but the shipped
`test_pattern` renders each frame (about 2 ms at 1080p, capped at 240 fps) and stamps only
wall-clock milliseconds, which would hide the hop cost.  So `bench_source` emits pre-rendered frames
stamped with CLOCK_MONOTONIC ns, `bench_sink` records `now - t0`, and the filters are either
`bench_pass` (emits its zero-copy input view: the runtime's one ring write per hop) or the real
`overlay` with empty text (which also copies into its own buffer first).

Each variant is one engine run: paced phase (60 frames/s, nothing queues: end-to-end latency per
frame) then saturated phase (`fps: 0`, every edge `policy: block`: the most frames/s the chain
delivers), each measured in several windows.  The cost per hop is the latency difference between the
3-hop chain and the direct 1-hop source -> sink, divided by the 2 extra hops.
"""

from __future__ import annotations

import time
from typing import Any

from ._common import Result, Settings, Spread, Table, fmt_ms, fmt_rate, fmt_x, ratios
from ._engine import BenchEngine

NAME = "chain"
W, H = 1920, 1080
PACED_FPS = 60.0

VARIANTS: dict[str, list[str]] = {
    "source -> sink (1 hop)": [],
    "source -> 2 x bench_pass -> sink (3 hops)": ["bench_pass", "bench_pass"],
    "source -> 2 x overlay(text='') -> sink (3 hops)": ["overlay", "overlay"],
}


def topology(filters: list[str]) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "src", "kind": "bench_source",
                                    "options": {"width": W, "height": H, "fps": PACED_FPS}}]
    prev = "src"
    for i, kind in enumerate(filters):
        nid = f"f{i + 1}"
        nodes.append({"id": nid, "kind": kind, "inputs": {"in": {"from": prev, "policy": "block"}}})
        prev = nid
    nodes.append({"id": "sink", "kind": "bench_sink", "inputs": {"in": {"from": prev, "policy": "block"}}})
    return {"version": 1, "name": "bench-chain", "nodes": nodes}


def _windows(eng: BenchEngine, n: int, warm_s: float, window_s: float) -> list[dict[str, Any]]:
    time.sleep(warm_s)
    out = []
    for _ in range(n):
        eng.command("sink", "bench_reset")
        time.sleep(window_s)
        out.append(dict(eng.command("sink", "bench_stats")))
    return out


def measure(filters: list[str], settings: Settings) -> dict[str, list[dict[str, Any]]]:
    reps = settings.n(5, 2)
    window = settings.secs(3.0, 0.8)
    with BenchEngine.start(topology(filters), settings.workdir) as eng:
        eng.wait_running()
        paced = _windows(eng, reps, 0.5, window)
        eng.request("set", node="src", options={"fps": 0.0, "burst": 4})
        saturated = _windows(eng, reps, 0.5, window)
        eng.stop()
        return {"paced": paced, "saturated": saturated}


def run(settings: Settings) -> Result:
    res = Result(NAME)
    figures = {label: measure(filters, settings) for label, filters in VARIANTS.items()}

    def sp(label: str, phase: str, key: str) -> Spread:
        return Spread.of([w[key] for w in figures[label][phase]])

    table = Table(["chain (1920x1080 rgb24)", f"latency p50 @{PACED_FPS:g} fps", "p99", "max frames/s",
                   "latency p50 saturated"])
    for label in VARIANTS:
        table.add(label, sp(label, "paced", "lat_p50_s").fmt(fmt_ms), sp(label, "paced", "lat_p99_s").fmt(fmt_ms),
                  sp(label, "saturated", "fps").fmt(fmt_rate), sp(label, "saturated", "lat_p50_s").fmt(fmt_ms))
    n = len(next(iter(figures.values()))["paced"])
    res.tables.append((f"end to end, source emit -> sink on_frame; {n} windows per phase, median [min..max]", table))

    direct, bp, ov = list(VARIANTS)
    per_hop = Table(["filter", "cost per extra hop (latency)", "throughput vs direct"])
    hop_cost: dict[str, Spread] = {}
    for label, name in ((bp, "bench_pass"), (ov, "overlay(text='')")):
        a = [w["lat_p50_s"] for w in figures[label]["paced"]]
        b = [w["lat_p50_s"] for w in figures[direct]["paced"]]
        hop_cost[name] = Spread.of([(x - y) / 2 for x, y in zip(a, b, strict=True)])
        tput = ratios([w["fps"] for w in figures[label]["saturated"]], [w["fps"] for w in figures[direct]["saturated"]])
        per_hop.add(name, hop_cost[name].fmt(fmt_ms), tput.fmt(fmt_x))
    res.tables.append(("cost of one filter hop = (3-hop latency - 1-hop latency) / 2, windows paired", per_hop))

    lat = sp(bp, "paced", "lat_p50_s")
    p99 = sp(bp, "paced", "lat_p99_s")
    fps = sp(bp, "saturated", "fps")
    fps_direct = sp(direct, "saturated", "fps")
    res.notes.append("the variants run one after another, one engine each, and each variant's windows are "
                     "consecutive (they do not alternate: an engine start per window would cost more than the "
                     "window); ratios pair window i of each variant")
    res.data = figures
    res.headline = (f"1080p source -> 2 filters -> sink: {fmt_ms(lat.median)} end to end (p99 {fmt_ms(p99.median)}), "
                    f"{fmt_ms(hop_cost['bench_pass'].median)} per filter hop; max {fmt_rate(fps.median)} frames/s "
                    f"= {fmt_x(fps.median / fps_direct.median if fps_direct.median else float('nan'))} of a single hop")
    return res
