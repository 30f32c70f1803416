"""Benchmark `latency`: glass to glass through nginx-rtmp, the engine's 4-actor chain vs the ffmpeg CLI.

The source burns a machine stamp (`mediaengine.sdk.stamp`: frame counter + wall-clock ms at render time) into
every picture.  Engine: `src (test_pattern 720p30) -> filt (overlay) -> venc -> push (rtmp_sender)`
plus `tone (bench_beep: the tone in beeps on the wall clock) -> aenc -> push`.  ffmpeg: the same
frames and beeps rendered by `_feeder.py` into the ffmpeg CLI with the same encoder settings, once with
the engine sender's audio shift (`-itsoffset` on the audio input) and, in a full run, once without.
Two pullers watch each stream at once, the project's
player (`mediaengine.sdk.pull.StreamPuller`) and a bare PyAV loop (`fflags=nobuffer`, `flags=low_delay`,
one decoder thread); each computes, per decoded frame, receive wall-clock ms - stamp ms.  The PyAV loop
also decodes the audio and times each beep's onset (`_beep.py`): audio latency and the A/V offset.
Only what is decoded inside the window counts (after a warm-up for the connection and first GOP, until
the window's end).  The pushers alternate within each repetition.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.rtmp_server import RtmpServer

from ._beep import PERIOD_S, av_figures
from ._common import Result, Settings, Spread, Table, Target, fmt_ms, fmt_num, fmt_x, percentile, ratios
from ._engine import ROOT, BenchEngine
from ._procs import die_with_parent, kill_tree
from ._puller import Puller
from ._push import bench_push_topology, describe, push_spec

NAME = "latency"


def in_window(records: list[list[float]], since_mono: float, until_mono: float, mono_at: int = 3) -> list[list[float]]:
    """The records whose CLOCK_MONOTONIC receive time (field `mono_at`) is in [since_mono, until_mono)."""
    return [r for r in records if since_mono <= r[mono_at] < until_mono]


def latencies(frames: list[list[float]]) -> list[float]:
    """Glass-to-glass seconds of every decoded frame: receive wall ms - stamp wall ms."""
    return [(r[2] - r[1]) / 1000.0 for r in frames]


def summarise(frames: list[list[float]]) -> dict[str, float]:
    """Latency percentiles of the frames decoded in a window, the pictures among them (distinct burned-in
    counters) and the pictures the source rendered over the same stretch (the counters' span)."""
    lat = latencies(frames)
    counters = {int(r[0]) for r in frames}
    span = max(counters) - min(counters) + 1 if counters else 0
    return {"p50_s": percentile(lat, 50), "p95_s": percentile(lat, 95), "p99_s": percentile(lat, 99),
            "max_s": max(lat, default=float("nan")), "frames": len(lat), "pictures": len(counters),
            "rendered": span}


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
            eng = BenchEngine.start(engine_topo, settings.workdir)
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
        until = time.monotonic()  # frames decoded after this (while the pullers stop) are not counted
        if eng is not None:
            eng.check_alive()
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
        frames = in_window(doc["frames"], since, until)
        if not frames:
            raise RuntimeError(f"{tag}: puller {name} decoded no stamped frame in the window ({doc.get('error')})")
        out[name] = summarise(frames) | {"unreadable": doc["unreadable"], "puller": doc.get("puller")}
        # a starved machine loses pictures (a full run at load 20 on 2 cores decoded 38%); a broken engine ~none
        if out[name]["pictures"] < 0.1 * out[name]["rendered"]:
            raise RuntimeError(f"{tag}: puller {name} decoded {out[name]['pictures']} of the "
                               f"{out[name]['rendered']} pictures rendered in the window: the stream loses frames")
        if name == "own":  # the PyAV loop also decodes the audio and finds the beeps
            beeps = in_window(doc.get("beeps", []), since, until, mono_at=2)
            if not beeps:
                raise RuntimeError(f"{tag}: no beep found in the decoded audio of the window: the audio is "
                                   "missing or broken")
            av = av_figures(beeps, frames)
            out[name] |= {"beeps": len(beeps),
                          "audio_p50_s": percentile(av["audio_latency_s"], 50),
                          "audio_p95_s": percentile(av["audio_latency_s"], 95),
                          "av_offset_p50_s": percentile(av["av_offset_s"], 50)}
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
        topo = bench_push_topology(server.url(stream="engine"), with_filter=True, beeps=True)
        spec = dataclasses.replace(push_spec(topo), beeps=True)
        for i in range(reps):  # the pushers alternate within each repetition
            engine.append(measure(server, f"engine{i}", settings, warm, window,
                                  bench_push_topology(server.url(stream=f"engine{i}"), with_filter=True, beeps=True),
                                  spec.to_json(), f"engine{i}"))
            ffmpeg.append(measure(server, f"ffmpeg{i}", settings, warm, window, None, spec.to_json(), f"ffmpeg{i}"))
            if not settings.quick and spec.audio_offset_ms:
                plain = dataclasses.replace(spec, audio_offset_ms=0.0).to_json()
                ffmpeg_plain.append(measure(server, f"plain{i}", settings, warm, window, None, plain, f"plain{i}"))
    finally:
        server.stop()

    table = Table(["pusher", "puller", "median", "p95", "p99", "max", "pictures decoded / rendered",
                   "audio latency median", "audio p95", "A/V offset (audio later)"])
    variants = [("engine: src -> filt -> enc -> sender", engine),
                (f"ffmpeg CLI, same frames, audio offset {spec.audio_offset_ms:g} ms", ffmpeg)]
    if ffmpeg_plain:
        variants.append(("ffmpeg CLI, same frames, no audio offset", ffmpeg_plain))
    for label, runs in variants:
        for puller in PULLERS:
            def col(key: str, runs: list[dict[str, Any]] = runs, puller: str = puller) -> str:
                if any(key not in r[puller] for r in runs):
                    return "-"
                return Spread.of([r[puller][key] for r in runs]).fmt(fmt_ms)

            decoded = sum(r[puller]["pictures"] for r in runs)
            rendered = sum(r[puller]["rendered"] for r in runs)
            table.add(label, puller, col("p50_s"), col("p95_s"), col("p99_s"), col("max_s"),
                      f"{fmt_num(decoded)} / {fmt_num(rendered)}", col("audio_p50_s"), col("audio_p95_s"),
                      col("av_offset_p50_s"))
    res.tables.append((f"glass to glass through nginx-rtmp, {describe(spec)}; {window:g} s windows, {reps} "
                       "repetitions (median [min..max] of each run's percentile); both pullers watch the same "
                       "stream at once. pictures = distinct burned-in counters decoded in the window, rendered = "
                       "the span of those counters. Audio (own puller only): a beep every "
                       f"{PERIOD_S:g} s of wall clock; audio latency = decoded - due; A/V offset = (audio pts - "
                       "due) - (video pts - stamp), positive when a player following the timestamps plays the "
                       "sound after the picture of the same instant", table))
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
    res.targets = [Target(f"engine / ffmpeg CLI (same audio offset) glass-to-glass median, {main} puller",
                          vs.median, "<=", 1.0, fmt_x(vs.median)),
                   Target(f"engine glass-to-glass median, {main} puller (ms, absolute)", p50.median * 1e3, "<=", 50,
                          fmt_ms(p50.median)),
                   Target(f"engine glass-to-glass p95, {main} puller (ms, absolute)", p95.median * 1e3, "<=", 100,
                          fmt_ms(p95.median))]
    res.data = {"engine": engine, "ffmpeg": ffmpeg, "ffmpeg_no_audio_offset": ffmpeg_plain}
    ff50 = Spread.of([r[main]["p50_s"] for r in ffmpeg]).median
    own50 = Spread.of([r["own"]["p50_s"] for r in engine]).median
    audio50 = Spread.of([r["own"]["audio_p50_s"] for r in engine]).median
    av50 = Spread.of([r["own"]["av_offset_p50_s"] for r in engine]).median
    res.headline = (f"glass to glass {fmt_ms(p50.median)} median (p95 {fmt_ms(p95.median)}) for the engine vs "
                    f"{fmt_ms(ff50)} for the ffmpeg CLI = {fmt_x(vs.median)} ({main} puller; "
                    f"{fmt_ms(own50)} with the nobuffer puller); engine audio {fmt_ms(audio50)}, "
                    f"A/V offset {av50 * 1e3:+.1f} ms (audio later)")
    return res
