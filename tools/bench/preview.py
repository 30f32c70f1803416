"""Benchmark `preview`: does a preview slow the push?  The 720p30 push with and without a `preview` node.

Both runs push the benchmark's 720p30 graph (`_push.bench_push_topology`: test pattern -> H.264, tone ->
AAC -> rtmp_sender -> nginx-rtmp); the second adds `prev` (kind `preview`, `mode: http`, 10 fps) on the
test pattern's output, with a viewer (Debian's ffmpeg reading `/stream.mjpg`, outside the engine) so the
preview really encodes and serves.  Over the same window each run measures the push's video frame rate
(frames into the encoder, from its own counters) and the CPU of the push's processes (every node but
`prev`: the preview's own CPU is reported apart).  Repetitions alternate the two runs so machine load
drifts hit both.  Targets: the frame rate and the push's CPU change by at most 5% with the preview.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from tools.rtmp_server import RtmpServer

from ._common import Result, Settings, Spread, Table, Target, fmt_pct, fmt_rate, fmt_s, fmt_x, ratios
from ._engine import BenchEngine, measure_cpu_window
from ._procs import die_with_parent, kill_tree
from ._push import bench_push_topology
from .push_cpu import wait_publishing

NAME = "preview"
PREVIEW = "prev"
LIMIT = 0.05  # at most 5% change


def topology(url: str, with_preview: bool) -> dict[str, Any]:
    topo = bench_push_topology(url, with_filter=False)
    if with_preview:
        topo["nodes"].append({"id": PREVIEW, "kind": "preview", "inputs": {"in": "src"},
                              "options": {"mode": "http", "port": 0, "max_fps": 10}})
    return topo


def measure(server: RtmpServer, stream: str, settings: Settings, with_preview: bool, warm_s: float,
            window_s: float) -> dict[str, Any]:
    with BenchEngine.start(topology(server.url(stream=stream), with_preview), settings.workdir) as eng:
        eng.wait_running()
        wait_publishing(server, stream, 15, eng.check_alive)
        viewer = None
        if with_preview:
            port = eng.command(PREVIEW, "url")["port"]
            viewer = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-i",
                                       f"http://127.0.0.1:{port}/stream.mjpg", "-f", "null", "-"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=die_with_parent)
        try:
            time.sleep(warm_s)
            window = measure_cpu_window(eng, window_s)
            if viewer is not None and viewer.poll() is not None:
                raise RuntimeError(f"the MJPEG viewer exited ({viewer.returncode}): the preview did not serve")
            shown = eng.ps()
        finally:
            if viewer is not None:
                kill_tree(viewer.pid)
                viewer.wait(5)
        eng.stop()
    per_node = window.per_node_cpu_s
    prev_metrics = next((n["metrics"].get("actor") or {} for n in shown["nodes"] if n["id"] == PREVIEW), {})
    return {"fps": window.fps, "wall_s": window.wall_s,
            "push_cpu_s": sum(v for k, v in per_node.items() if k != PREVIEW),
            "preview_cpu_s": per_node.get(PREVIEW, 0.0), "per_node_cpu_s": per_node,
            "preview_shown": prev_metrics.get("shown")}


def run(settings: Settings) -> Result:
    res = Result(NAME)
    reps = settings.n(3, 1)
    window = settings.secs(20.0, 5.0)
    warm = settings.secs(3.0, 1.5)
    plain: list[dict[str, Any]] = []
    viewed: list[dict[str, Any]] = []
    server = RtmpServer(Path(settings.workdir) / "rtmp-preview")
    server.start()
    try:
        for i in range(reps):
            plain.append(measure(server, f"plain{i}", settings, False, warm, window))
            viewed.append(measure(server, f"preview{i}", settings, True, warm, window))
    finally:
        server.stop()

    table = Table(["run", "push video fps", "push CPU s", "push CPU %", "preview CPU s"])
    for label, runs in (("push alone", plain), ("push + preview (http, 10 fps, one MJPEG viewer)", viewed)):
        table.add(label, Spread.of([r["fps"] for r in runs]).fmt(fmt_rate),
                  Spread.of([r["push_cpu_s"] for r in runs]).fmt(fmt_s),
                  Spread.of([100 * r["push_cpu_s"] / r["wall_s"] for r in runs]).fmt(fmt_pct),
                  Spread.of([r["preview_cpu_s"] for r in runs]).fmt(fmt_s))
    res.tables.append((f"720p30 push to nginx-rtmp, {window:g} s windows, {reps} repetitions, "
                       "median [min..max]", table))
    fps_ratio = ratios([r["fps"] for r in viewed], [r["fps"] for r in plain])
    cpu_ratio = ratios([r["push_cpu_s"] for r in viewed], [r["push_cpu_s"] for r in plain])
    fps_change = abs(fps_ratio.median - 1.0)
    cpu_change = cpu_ratio.median - 1.0
    res.targets = [
        Target("push frame rate change with the preview", 100 * fps_change, "<=", 100 * LIMIT,
               f"{100 * fps_change:.1f}%"),
        Target("push CPU increase with the preview", 100 * cpu_change, "<=", 100 * LIMIT, f"{100 * cpu_change:+.1f}%"),
    ]
    res.data = {"plain": plain, "preview": viewed}
    res.headline = (f"with a preview attached the push runs at {fmt_x(fps_ratio.median)} its frame rate and "
                    f"{fmt_x(cpu_ratio.median)} its CPU (preview itself: "
                    f"{Spread.of([r['preview_cpu_s'] / r['wall_s'] * 100 for r in viewed]).median:.1f}% of a core)")
    return res
