"""Benchmark `push_cpu`: the engine pushing 720p30 H.264 + AAC to nginx-rtmp vs the ffmpeg CLI.

Engine: `src (test_pattern) -> venc -> push (rtmp_sender)`, `tone -> aenc -> push`, encoder and
sender options from `topologies/push_rtmp.yaml`.  ffmpeg: `tools/bench/_feeder.py` renders the same
frames and tone with the same functions, in real time, into ffmpeg's pipes; ffmpeg encodes with the
same libx264/AAC settings and pushes FLV to the same server.  Each side runs until it is publishing
and warm, then its whole process tree is measured for the same window: CPU seconds (user+system of
every process: supervisor, fork server and actors; feeder and ffmpeg), peak summed RSS and PSS.
Repetitions alternate engine and ffmpeg so drifts in machine load hit both.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.rtmp_server import RtmpServer

from ._common import Result, Settings, Spread, Table, Target, fmt_mb, fmt_pct, fmt_s, fmt_x, ratios
from ._engine import ROOT, BenchEngine
from ._procs import TreeSampler, die_with_parent, kill_tree
from ._push import bench_push_topology, describe, push_spec

NAME = "push_cpu"


def wait_publishing(server: RtmpServer, stream: str, timeout_s: float, alive: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive()
        try:
            if any(c.publishing for c in server.clients(stream)):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing published on {stream!r} within {timeout_s:g} s")


def measure_engine(server: RtmpServer, stream: str, settings: Settings, warm_s: float,
                   window_s: float) -> dict[str, Any]:
    topo = bench_push_topology(server.url(stream=stream), with_filter=False)
    with BenchEngine.start(topo, settings.workdir) as eng:
        eng.wait_running()
        wait_publishing(server, stream, 15, eng.check_alive)
        time.sleep(warm_s)
        pids = eng.node_pids()
        sampler = TreeSampler([eng.pid], interval_s=0.5)
        sampler.start()
        time.sleep(window_s)
        sampler.stop()
        eng.check_alive()
        if not any(c.publishing for c in server.clients(stream)):
            raise RuntimeError("the engine stopped publishing during the measurement")
        by_pid = sampler.cpu_by_pid()
        per_node = {nid: by_pid.get(pid, 0.0) for nid, pid in pids.items()}
        eng.stop()
    return {"cpu_s": sampler.cpu_s, "wall_s": sampler.wall_s, "peak_rss": sampler.peak_rss,
            "peak_pss": sampler.peak_pss, "per_node_cpu_s": per_node,
            "other_cpu_s": sampler.cpu_s - sum(per_node.values())}


def measure_ffmpeg(server: RtmpServer, stream: str, spec_json: str, warm_s: float, window_s: float,
                   log: Path) -> dict[str, Any]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tools.bench._feeder", server.url(stream=stream),
                                 "--spec", spec_json, "--duration", str(warm_s + window_s + 60)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent)
    try:
        def alive() -> None:
            if proc.poll() is not None:
                raise RuntimeError(f"ffmpeg feeder exited with {proc.returncode}: {log.read_text()[-2000:]}")

        wait_publishing(server, stream, 15, alive)
        time.sleep(warm_s)
        sampler = TreeSampler([proc.pid], interval_s=0.5)
        sampler.start()
        time.sleep(window_s)
        sampler.stop()
        alive()
    finally:
        kill_tree(proc.pid)
        proc.wait(5)
    return {"cpu_s": sampler.cpu_s, "wall_s": sampler.wall_s, "peak_rss": sampler.peak_rss,
            "peak_pss": sampler.peak_pss}


def run(settings: Settings) -> Result:
    res = Result(NAME)
    reps = settings.n(3, 1)
    window = settings.secs(20.0, 5.0)
    warm = settings.secs(3.0, 1.5)
    spec = push_spec(bench_push_topology("rtmp://unused", with_filter=False))
    engine: list[dict[str, Any]] = []
    ffmpeg: list[dict[str, Any]] = []
    server = RtmpServer(Path(settings.workdir) / "rtmp-push-cpu")
    server.start()
    try:
        for i in range(reps):
            engine.append(measure_engine(server, f"engine{i}", settings, warm, window))
            ffmpeg.append(measure_ffmpeg(server, f"ffmpeg{i}", spec.to_json(), warm, window,
                                         Path(settings.workdir) / f"feeder-{i}.log"))
    finally:
        server.stop()

    table = Table(["pusher", "CPU s", "CPU % of one core", "peak RSS (sum)", "peak PSS (sum)"])
    for label, runs in (("engine (5 actors + supervisor + fork server)", engine),
                        ("ffmpeg CLI + frame feeder", ffmpeg)):
        table.add(label, Spread.of([r["cpu_s"] for r in runs]).fmt(fmt_s),
                  Spread.of([100 * r["cpu_s"] / r["wall_s"] for r in runs]).fmt(fmt_pct),
                  Spread.of([r["peak_rss"] for r in runs]).fmt(fmt_mb),
                  Spread.of([r["peak_pss"] for r in runs]).fmt(fmt_mb))
    res.tables.append((f"{describe(spec)}; {window:g} s windows, {reps} repetitions, median [min..max]", table))

    split = Table(["engine process", "CPU s", "share"])
    total = Spread.of([r["cpu_s"] for r in engine]).median
    for nid in engine[0]["per_node_cpu_s"]:
        s = Spread.of([r["per_node_cpu_s"].get(nid, 0.0) for r in engine])
        split.add(nid, s.fmt(fmt_s), fmt_pct(100 * s.median / total if total else float("nan")))
    other = Spread.of([r["other_cpu_s"] for r in engine])
    split.add("supervisor + fork server", other.fmt(fmt_s),
              fmt_pct(100 * other.median / total if total else float("nan")))
    res.tables.append(("where the engine's CPU goes", split))

    cpu_ratio = ratios([r["cpu_s"] for r in engine], [r["cpu_s"] for r in ffmpeg])
    pss_ratio = ratios([r["peak_pss"] for r in engine], [r["peak_pss"] for r in ffmpeg])
    res.targets = [Target("engine CPU / ffmpeg CPU", cpu_ratio.median, "<=", 1.15, fmt_x(cpu_ratio.median))]
    res.data = {"engine": engine, "ffmpeg": ffmpeg, "spec": spec.to_json()}
    res.headline = (f"engine pushing 720p30 uses {fmt_x(cpu_ratio.median)} the CPU of the ffmpeg CLI "
                    f"(spread {cpu_ratio.fmt(fmt_x)}), {fmt_x(pss_ratio.median)} its memory (PSS)")
    return res
