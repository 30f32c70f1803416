"""Benchmark `latency`: glass to glass through nginx-rtmp, the engine's 4-actor chain vs the ffmpeg CLI.

The source burns a machine stamp (`mediaengine.sdk.stamp`: frame counter + wall-clock ms at render time) into
every picture.  Engine: `src (test_pattern 720p30) -> filt (overlay) -> venc -> push (rtmp_sender)`
plus `tone -> aenc -> push`.  ffmpeg: the same frames and tone rendered by `_feeder.py` into the
ffmpeg CLI with the same encoder settings.  Two pullers watch each stream at once, the project's
player (`mediaengine.sdk.pull.StreamPuller`) and a bare PyAV loop (`fflags=nobuffer`, `flags=low_delay`,
one decoder thread); each computes, per decoded frame, receive wall-clock ms - stamp ms.  The first
seconds (connection, first GOP) are not measured.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.rtmp_server import RtmpServer

from ._common import Result, Settings, Spread, Table, Target, fmt_ms, fmt_num, fmt_x, percentile, ratios
from ._engine import ROOT, BenchEngine
from ._procs import die_with_parent, kill_tree
from ._puller import Puller
from ._push import bench_push_topology, describe, push_spec

NAME = "latency"


def latencies(doc: dict[str, Any], since_mono: float) -> list[float]:
    """Glass-to-glass seconds of every frame the puller decoded after `since_mono` (CLOCK_MONOTONIC)."""
    return [(recv_ms - stamp_ms) / 1000.0 for _c, stamp_ms, recv_ms, mono in doc["frames"] if mono >= since_mono]


def summarise(lat: list[float], expected: int) -> dict[str, float]:
    return {"p50_s": percentile(lat, 50), "p95_s": percentile(lat, 95), "p99_s": percentile(lat, 99),
            "max_s": max(lat, default=float("nan")), "frames": len(lat), "expected": expected}


PULLERS = {"player": "mediaengine.sdk.pull.StreamPuller", "own": "PyAV loop, fflags=nobuffer, 1 decoder thread"}


def measure(server: RtmpServer, stream: str, settings: Settings, warm_s: float, window_s: float,
            engine_topo: dict[str, Any] | None, spec_json: str, tag: str) -> dict[str, Any]:
    """One push watched by both pullers at once; per puller its latency figures, plus the engine's
    per-node processing times when the pusher is the engine."""
    work = Path(settings.workdir)
    pullers = {"player": Puller(server.url(stream=stream), work / f"pull-{tag}-player.json"),
               "own": Puller(server.url(stream=stream), work / f"pull-{tag}-own.json", own=True)}
    feeder: subprocess.Popen[bytes] | None = None
    eng: BenchEngine | None = None
    stages: dict[str, Any] = {}
    docs: dict[str, dict[str, Any]] = {}
    try:
        if engine_topo is not None:
            eng = BenchEngine(engine_topo, settings.workdir).start()
            eng.wait_running()
        else:
            with open(work / f"feeder-{tag}.log", "wb") as log:
                feeder = subprocess.Popen([sys.executable, "-m", "tools.bench._feeder", server.url(stream=stream),
                                           "--spec", spec_json, "--duration", str(warm_s + window_s + 60)],
                                          cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                          preexec_fn=die_with_parent)
        time.sleep(warm_s)
        since = time.monotonic()
        time.sleep(window_s)
        if eng is not None:
            eng._check_alive()
            stages = engine_stages(eng.ps())
        if feeder is not None and feeder.poll() is not None:
            raise RuntimeError(f"ffmpeg feeder exited early with {feeder.returncode}")
        for name, p in pullers.items():
            docs[name] = p.stop()
    finally:
        for p in pullers.values():
            p.kill()
        if eng is not None:
            eng.cleanup()
        if feeder is not None:
            kill_tree(feeder.pid)
            feeder.wait(5)
    out: dict[str, Any] = {"stages": stages}
    for name, doc in docs.items():
        lat = latencies(doc, since)
        if not lat:
            raise RuntimeError(f"{tag}: puller {name} decoded no stamped frame in the window ({doc.get('error')})")
        out[name] = summarise(lat, round(window_s * 30)) | {"unreadable": doc["unreadable"],
                                                            "puller": doc.get("puller")}
    return out


def engine_stages(ps: dict[str, Any]) -> dict[str, Any]:
    """Per node: median hook time per frame (ms) from the runtime's metrics; the sender's queue."""
    out: dict[str, Any] = {}
    for n in ps["nodes"]:
        m = n.get("metrics") or {}
        out[n["id"]] = {"proc_ms": m.get("proc_ms_median"), "proc_p95_ms": m.get("proc_ms_p95")}
        actor = m.get("actor") or {}
        if "queued_ms" in actor:
            out[n["id"]]["queued_ms"] = actor.get("queued_ms")
            out[n["id"]]["mux_block_avg_ms"] = (actor.get("mux_block_ms") or {}).get("avg")
    return out


def run(settings: Settings) -> Result:
    res = Result(NAME)
    reps = settings.n(3, 1)
    window = settings.secs(10.0, 4.0)
    warm = settings.secs(4.0, 3.0)
    server = RtmpServer(Path(settings.workdir) / "rtmp-latency")
    engine: list[dict[str, Any]] = []
    ffmpeg: list[dict[str, Any]] = []
    ffmpeg_plain: list[dict[str, Any]] = []
    server.start()
    try:
        topo = bench_push_topology(server.url(stream="engine"), with_filter=True)
        spec = push_spec(topo)
        for i in range(reps):
            engine.append(measure(server, f"engine{i}", settings, warm, window,
                                  bench_push_topology(server.url(stream=f"engine{i}"), with_filter=True),
                                  spec.to_json(), f"engine{i}"))
            ffmpeg.append(measure(server, f"ffmpeg{i}", settings, warm, window, None, spec.to_json(), f"ffmpeg{i}"))
            if not settings.quick and spec.audio_offset_ms:
                plain = dataclasses.replace(spec, audio_offset_ms=0.0).to_json()
                ffmpeg_plain.append(measure(server, f"plain{i}", settings, warm, window, None, plain, f"plain{i}"))
    finally:
        server.stop()

    table = Table(["pusher", "puller", "median", "p95", "p99", "max", "frames decoded / sent"])
    variants = [("engine: src -> filt -> enc -> sender", engine),
                (f"ffmpeg CLI, same frames, audio offset {spec.audio_offset_ms:g} ms", ffmpeg)]
    if ffmpeg_plain:
        variants.append(("ffmpeg CLI, same frames, no audio offset", ffmpeg_plain))
    for label, runs in variants:
        for puller in PULLERS:
            def col(key: str, runs: list[dict[str, Any]] = runs, puller: str = puller) -> str:
                return Spread.of([r[puller][key] for r in runs]).fmt(fmt_ms)

            decoded = sum(r[puller]["frames"] for r in runs)
            sent = sum(r[puller]["expected"] for r in runs)
            table.add(label, puller, col("p50_s"), col("p95_s"), col("p99_s"), col("max_s"),
                      f"{fmt_num(decoded)} / {fmt_num(sent)}")
    res.tables.append((f"glass to glass through nginx-rtmp, {describe(spec)}; {window:g} s windows, {reps} "
                       "repetitions (median [min..max] of each run's percentile); both pullers watch the same "
                       "stream at once", table))
    stages = Table(["engine node", "hook ms per frame (median)", "p95", "sender queue ms", "mux() block avg ms"])
    timed = [nid for nid, v in engine[0]["stages"].items() if v.get("proc_ms") or "queued_ms" in v]
    for nid in timed:
        def st(key: str, nid: str = nid) -> str:
            vals = [r["stages"][nid].get(key) for r in engine]
            return Spread.of([float(v) for v in vals if v is not None]).fmt(lambda x: f"{x:.2f}")

        stages.add(nid, st("proc_ms"), st("proc_p95_ms"), st("queued_ms"), st("mux_block_avg_ms"))
    res.tables.append(("where the engine's time goes: hook time per frame from the runtime's metrics at the end "
                       "of each window (sources' on_tick is not timed; rendering a 720p test frame takes about 1 ms), "
                       "plus about 1 ms per hop between actors (see `chain`)", stages))
    res.notes.append("pullers: " + "; ".join(f"{k} = {v}" for k, v in PULLERS.items())
                     + ". latency = wall clock at decode - stamp burned in at render")
    main = "player" if all(r["player"].get("puller") == PULLERS["player"] for r in engine + ffmpeg) else "own"
    p50 = Spread.of([r[main]["p50_s"] for r in engine])
    p95 = Spread.of([r[main]["p95_s"] for r in engine])
    vs = ratios([r[main]["p50_s"] for r in engine], [r[main]["p50_s"] for r in ffmpeg])
    res.targets = [Target(f"engine glass-to-glass median, {main} puller (ms)", p50.median * 1e3, "<=", 50,
                          fmt_ms(p50.median)),
                   Target(f"engine glass-to-glass p95, {main} puller (ms)", p95.median * 1e3, "<=", 100,
                          fmt_ms(p95.median))]
    res.data = {"engine": engine, "ffmpeg": ffmpeg, "ffmpeg_no_audio_offset": ffmpeg_plain}
    ff50 = Spread.of([r[main]["p50_s"] for r in ffmpeg]).median
    own50 = Spread.of([r["own"]["p50_s"] for r in engine]).median
    res.headline = (f"glass to glass {fmt_ms(p50.median)} median (p95 {fmt_ms(p95.median)}) for the engine vs "
                    f"{fmt_ms(ff50)} for the ffmpeg CLI = {fmt_x(vs.median)} ({main} puller; "
                    f"{fmt_ms(own50)} with the nobuffer puller)")
    return res
