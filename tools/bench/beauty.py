"""Benchmark `beauty`: the face beauty filter per 720p frame on one core, and a 720p30 beauty push's CPU.

Per frame (in a worker process, `python -m tools.bench.beauty frames ...`, so its core pinning and
MediaPipe's threads stay out of the suite's process): every case is timed per frame at 1280x720, next
to a plain `np.copyto` of the frame into a preallocated slot in the same run, on a real face
(`tests/facekit.py`: the astronaut portrait moving, scaled and turned per frame, with camera noise and
an H.264 round trip), played forwards then backwards so the motion never jumps:

- `landmarks`: `FaceMesh.detect` (MediaPipe's face detector and landmark model, tracking mode) alone, and
  the same landmarks from MediaPipe's own face-mesh graph (`GraphFaceMesh.detect`), for reference;
- each effect alone at strength 60 (`beautify` with the landmarks the actor's tracker produced for that
  frame, computed beforehand: the effect's own cost, warp tables rebuilt whenever the landmarks moved);
- `all effects`: every effect at 60, landmarks precomputed;
- `landmarks + all effects`: what the actor does per frame, `FaceTracks.update(FaceMesh.detect(frame))`
  then `beautify` with every effect at 60.

A moving face makes the tracker's dead band and the warp-table cache miss (as on a live camera with a
person in motion); a still face (the centred face with fresh sensor noise per frame) lets them hit: the
two are reported apart.  The worker pins all its threads to one core (`os.sched_setaffinity` on every
task of the process; threads started later inherit it) and runs OpenCV on one thread.  Before pinning
it runs the landmarks case unpinned and reports MediaPipe's threads and its CPU time over wall time: how
many cores the face mesh really uses when it may.

Topology: `topologies/beauty_push.yaml` as shipped (file_source playing the face clip that
`tools/faceclip.py` writes, in real time -> beauty -> libx264 -> rtmp_sender) pushing to a local
nginx-rtmp, and the same graph without the beauty node, alternating within each repetition.  Over the
same window: the whole engine tree's CPU (supervisor and fork server included) in cores, each node's
CPU, the encoder's input frame rate, and the frames in which beauty found the face.

Targets (issue 13, absolute): landmarks + all effects <= 8 ms median per 720p frame on one core (moving
face); the whole 720p30 beauty push <= 1.0 core.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._common import Result, Settings, Spread, Table, Target, fmt_pct, fmt_rate, fmt_x, ratios

NAME = "beauty"
W, H, FPS = 1280, 720, 30
STRENGTH = 60
EFFECT_NAMES = ("smooth", "whiten", "bright", "rosy", "blush", "thin", "chin_slim", "chin_short", "eye")
TARGET_MS = 8.0  # landmarks + all effects, median per 720p frame on one core, moving face
TARGET_CORES = 1.0  # the whole 720p30 beauty push
COPY = "copy (baseline)"
LANDMARKS = "landmarks (FaceMesh.detect)"
LANDMARKS_GRAPH = "landmarks by MediaPipe's graph (GraphFaceMesh.detect, reference)"
ALL_EFFECTS = f"all effects at {STRENGTH} (landmarks precomputed)"
EVERYTHING = f"landmarks + all effects at {STRENGTH} (FaceTracks + beautify)"
TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "beauty_push.yaml"
BEAUTY_NODE = "beauty"


def effect_case(effect: str) -> str:
    return f"{effect} {STRENGTH}"


CASES: tuple[str, ...] = (COPY, LANDMARKS, LANDMARKS_GRAPH, *(effect_case(e) for e in EFFECT_NAMES), ALL_EFFECTS,
                          EVERYTHING)
FACES = ("moving", "still")


# ---- the per-frame worker (runs in its own process) ---------------------------------------------

def pin_process(cpu: int) -> int:
    """Pin every thread of this process to `cpu` (threads started later inherit it); how many were pinned."""
    tasks = os.listdir("/proc/self/task")
    for tid in tasks:
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except (ProcessLookupError, PermissionError):
            pass
    return len(tasks)


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))


def thread_cpu() -> dict[tuple[int, str], float]:
    """(tid, name) -> user+system CPU seconds of every thread of this process (/proc/self/task)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
        except OSError:
            continue
        out[(int(tid), name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def split_by_thread(before: dict[tuple[int, str], float], after: dict[tuple[int, str], float],
                    main_tid: int) -> dict[str, float]:
    """CPU seconds between two `thread_cpu` readings: the calling thread, MediaPipe's (named `mediapipe/*`)
    and every other thread of the process."""
    out = {"main": 0.0, "mediapipe": 0.0, "other": 0.0}
    for (tid, name), cpu in after.items():
        d = cpu - before.get((tid, name), 0.0)
        out["main" if tid == main_tid else "mediapipe" if name.startswith("mediapipe") else "other"] += d
    return out


def pingpong(frames: Sequence[Any]) -> list[Any]:
    """The frames forwards then backwards: looping it never jumps (0 1 2 2 1 0 0 1 ...)."""
    return [*frames, *frames[::-1]]


@dataclass
class _Timing:
    wall: list[float]
    cpu: list[float]


def time_steps(steps: dict[str, Callable[[int], None]], n: int, reps: int, warm: int = 5) -> dict[str, _Timing]:
    """Per-frame wall and CPU (process: every thread) seconds of each step; the steps alternate per
    repetition, each running frames 0..n-1 (their own state carries over from one repetition to the next)."""
    out = {name: _Timing([], []) for name in steps}
    for step in steps.values():  # warm-up (allocations, the tracker's first detection), not timed
        for k in range(warm):
            step(k % n)
    for _ in range(reps):
        for name, step in steps.items():
            t = out[name]
            for k in range(n):
                c0, t0 = time.process_time(), time.perf_counter()
                step(k)
                t1, c1 = time.perf_counter(), time.process_time()
                t.wall.append(t1 - t0)
                t.cpu.append(c1 - c0)
    return out


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


def case_steps(frames: Sequence[Any], tracked: Sequence[Any], slots: Sequence[Any]
               ) -> tuple[dict[str, Callable[[int], None]], list[Any]]:
    """Every case's per-frame step `step(k)` on `frames[k]` (into slot k % 4), and the FaceMeshes they use
    (to close).  `tracked[k]` are the actor's faces for frame k (for the cases without landmarks)."""
    import numpy as np
    from mediaengine.actors.beauty.landmarks import FaceMesh, FaceTracks, GraphFaceMesh
    from mediaengine.actors.beauty.pipeline import BeautyScratch, beautify

    all60 = dict.fromkeys(EFFECT_NAMES, STRENGTH)
    steps: dict[str, Callable[[int], None]] = {}

    def copy_step(k: int) -> None:
        np.copyto(slots[k % len(slots)], frames[k])
    steps[COPY] = copy_step

    lm_mesh = FaceMesh()

    def landmarks_step(k: int) -> None:
        lm_mesh.detect(frames[k])
    steps[LANDMARKS] = landmarks_step

    graph_mesh = GraphFaceMesh()

    def graph_step(k: int) -> None:
        graph_mesh.detect(frames[k])
    steps[LANDMARKS_GRAPH] = graph_step

    def effects_step(strengths: dict[str, int]) -> Callable[[int], None]:
        scratch = BeautyScratch()

        def step(k: int) -> None:
            beautify(frames[k], slots[k % len(slots)], tracked[k], strengths, scratch)
        return step

    for e in EFFECT_NAMES:
        steps[effect_case(e)] = effects_step({e: STRENGTH})
    steps[ALL_EFFECTS] = effects_step(all60)

    full_mesh, full_tracks, full_scratch = FaceMesh(), FaceTracks(), BeautyScratch()

    def everything_step(k: int) -> None:  # what the actor does per frame
        beautify(frames[k], slots[k % len(slots)], full_tracks.update(full_mesh.detect(frames[k])), all60,
                 full_scratch)
    steps[EVERYTHING] = everything_step
    return steps, [lm_mesh, graph_mesh, full_mesh]


def frames_worker(n_frames: int, reps: int, size: tuple[int, int] = (W, H)) -> dict[str, Any]:
    """All per-frame figures: {"unpinned": ..., "moving"/"still": {case: {"wall_ms": [...per rep],
    "cpu_ms": [...]}}, ...}.  Raises when the face is not found (the benchmark would measure nothing)."""
    import cv2
    import numpy as np
    from mediaengine.actors.beauty.landmarks import FaceMesh, FaceTracks
    from mediaengine.actors.beauty.pipeline import Face

    from tests import facekit

    cv2.setNumThreads(1)
    w, h = size
    t0 = time.perf_counter()
    clips = {"moving": pingpong(facekit.face_clip(n=n_frames, size=size)),
             "still": pingpong(facekit.still_clip(n=n_frames, size=size, noise=True))}
    clip_s = time.perf_counter() - t0

    # unpinned: how many threads MediaPipe starts and how many cores its face mesh keeps busy
    threads0 = thread_count()
    mesh = FaceMesh()
    threads1 = thread_count()
    frames = clips["moving"]
    for f in frames[:5]:
        mesh.detect(f)
    main_tid = threading.get_native_id()
    c0, t0, th0 = time.process_time(), time.perf_counter(), thread_cpu()
    per = []
    for f in frames:
        a = time.perf_counter()
        mesh.detect(f)
        per.append(time.perf_counter() - a)
    unpinned = {"threads_before": threads0, "threads_after_facemesh": thread_count(),
                "threads_at_start": threads1, "cpu_s": time.process_time() - c0,
                "wall_s": time.perf_counter() - t0, "median_ms": 1e3 * _median(per),
                "by_thread_s": split_by_thread(th0, thread_cpu(), main_tid),
                "affinity": sorted(os.sched_getaffinity(0))}
    mesh.close()
    # the actor's whole per-frame work paced at 30 fps, unpinned: threads that spin while the actor waits
    # for its next frame (a BLAS thread pool did, see BENCHMARKS.md) show up as CPU beyond the busy time
    steps, meshes = case_steps(frames, [[] for _ in frames], [np.zeros((h, w, 3), np.uint8)])
    step = steps[EVERYTHING]
    for k in range(5):
        step(k)
    c0, t0, th0, busy = time.process_time(), time.perf_counter(), thread_cpu(), 0.0
    for k in range(len(frames)):
        a = time.perf_counter()
        step(k)
        busy += time.perf_counter() - a
        time.sleep(max(0.0, 1 / FPS - (time.perf_counter() - a)))
    unpinned["paced"] = {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0, "busy_s": busy,
                         "frames": len(frames), "by_thread_s": split_by_thread(th0, thread_cpu(), main_tid)}
    for m in meshes:
        m.close()

    cpu = max(os.sched_getaffinity(0))
    pinned_tasks = pin_process(cpu)
    out: dict[str, Any] = {"unpinned": unpinned, "cpu": cpu, "pinned_tasks": pinned_tasks, "frames": len(frames),
                           "reps": reps, "clip_s": clip_s, "size": [w, h]}
    slots = [np.zeros((h, w, 3), np.uint8) for _ in range(4)]
    for kind, frames in clips.items():
        n = len(frames)
        # the actor's landmarks for every frame, as its tracker steadies them (for the effect-only cases)
        tracked: list[list[Face]] = []
        mesh, tracks = FaceMesh(), FaceTracks()
        for f in frames:
            tracked.append([Face(x.landmarks.copy(), x.weight) for x in tracks.update(mesh.detect(f))])
        mesh.close()
        found = sum(1 for fs in tracked if any(x.weight >= 1.0 for x in fs))
        if found < 0.8 * n:
            raise RuntimeError(f"{kind} face found in only {found} of {n} frames: nothing to measure")
        moved = sum(1 for a, b in itertools.pairwise(tracked)
                    if a and b and not np.array_equal(a[0].landmarks, b[0].landmarks))

        steps, meshes = case_steps(frames, tracked, slots)
        timings = time_steps(steps, n, reps)
        for m in meshes:
            m.close()
        out[kind] = {
            "cases": {name: {"wall_ms": [1e3 * _median(t.wall[r * n:(r + 1) * n]) for r in range(reps)],
                             "cpu_ms": [1e3 * _median(t.cpu[r * n:(r + 1) * n]) for r in range(reps)],
                             "p95_ms": 1e3 * float(np.percentile(t.wall, 95)),
                             "cpu_over_wall": sum(t.cpu) / sum(t.wall)}
                      for name, t in timings.items()},
            "face_found": found, "landmarks_moved": moved, "frames": n,
        }
    out["threads_end"] = thread_count()
    return out


def run_worker(settings: Settings, n_frames: int, reps: int) -> dict[str, Any]:
    """The per-frame figures from a worker process (its own core pinning, its own MediaPipe)."""
    out = Path(settings.workdir) / "beauty-frames.json"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "tools.bench.beauty", "frames", "--frames", str(n_frames),
                           "--reps", str(reps), "--out", str(out)], cwd=root, capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"the per-frame worker failed ({proc.returncode}): {proc.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


# ---- the push topology ------------------------------------------------------------------------------

def topology(url: str, clip: str, with_beauty: bool) -> dict[str, Any]:
    """`topologies/beauty_push.yaml` pushing `clip` to `url`; without beauty the encoder reads the source."""
    topo: dict[str, Any] = yaml.safe_load(TOPOLOGY.read_text())
    nodes = topo["nodes"]
    by_id = {n["id"]: n for n in nodes}
    beauty = by_id[BEAUTY_NODE]
    by_id["src"]["options"]["url"] = clip
    for n in nodes:
        if n["kind"] == "rtmp_sender":
            n["options"]["url"] = url
    if not with_beauty:
        for n in nodes:
            for pad, src in list((n.get("inputs") or {}).items()):
                if src == BEAUTY_NODE:
                    n["inputs"][pad] = beauty["inputs"]["in"]
        topo["nodes"] = [n for n in nodes if n["id"] != BEAUTY_NODE]
    return topo


def cores(cpu_s: float, wall_s: float) -> float:
    """CPU seconds over wall seconds: how many cores were busy on average; NaN without a window."""
    return cpu_s / wall_s if wall_s > 0 else float("nan")


def measure_push(server: Any, stream: str, clip: str, settings: Settings, with_beauty: bool, warm_s: float,
                 window_s: float) -> dict[str, Any]:
    from ._engine import BenchEngine, measure_cpu_window
    from .push_cpu import wait_publishing

    with BenchEngine.start(topology(server.url(stream=stream), clip, with_beauty), settings.workdir) as eng:
        eng.wait_running()
        wait_publishing(server, stream, 20, eng.check_alive)
        time.sleep(warm_s)
        window = measure_cpu_window(eng, window_s)
        if not any(c.publishing for c in server.clients(stream)):
            raise RuntimeError("the engine stopped publishing during the measurement")
        beauty_metrics = next(((n.get("metrics") or {}).get("actor") or {} for n in eng.ps()["nodes"]
                               if n["id"] == BEAUTY_NODE), {})
        eng.stop()
    per_node = window.per_node_cpu_s
    return {"cpu_s": window.cpu_s, "wall_s": window.wall_s, "fps": window.fps,
            "per_node_cpu_s": per_node, "other_cpu_s": window.cpu_s - sum(per_node.values()),
            "beauty": beauty_metrics}


def run_push(settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    from tools.faceclip import write_clip
    from tools.rtmp_server import RtmpServer

    work = Path(settings.workdir)
    clip = work / "beauty-face-clip.mp4"
    write_clip(clip, seconds=settings.secs(6.0, 3.0))  # loops cleanly (forwards, then backwards)
    reps = settings.n(3, 1)
    window = settings.secs(20.0, 3.0)
    warm = settings.secs(3.0, 1.0)
    plain: list[dict[str, Any]] = []
    beauty: list[dict[str, Any]] = []
    server = RtmpServer(work / "rtmp-beauty")
    server.start()
    try:
        for i in range(reps):
            plain.append(measure_push(server, f"plain{i}", str(clip), settings, False, warm, window))
            beauty.append(measure_push(server, f"beauty{i}", str(clip), settings, True, warm, window))
    finally:
        server.stop()
    return plain, beauty, window


# ---- the report ---------------------------------------------------------------------------------------

def _ms(x: float) -> str:
    return f"{x:.2f}"


def frame_tables(data: dict[str, Any]) -> list[tuple[str, Table]]:
    tables = []
    reps = data["reps"]
    for kind in FACES:
        d = data[kind]
        cases = d["cases"]
        copy = cases[COPY]["wall_ms"]
        t = Table(["case", "ms/frame", "p95 ms", "vs copy", "CPU ms/frame", "CPU/wall"])
        for name in CASES:
            c = cases[name]
            t.add(name, Spread.of(c["wall_ms"]).fmt(_ms), _ms(c["p95_ms"]),
                  ratios(c["wall_ms"], copy).fmt(fmt_x), Spread.of(c["cpu_ms"]).fmt(_ms), f"{c['cpu_over_wall']:.2f}")
        what = ("moving face (facekit.face_clip: moves, scales, turns; noise + H.264)" if kind == "moving" else
                "still face (facekit.still_clip: centred face, fresh sensor noise per frame)")
        tables.append((f"{what}, {data['size'][0]}x{data['size'][1]}, one core (CPU {data['cpu']}), one OpenCV "
                       f"thread: median of {d['frames']} frames per repetition, median [min..max] of {reps} "
                       "(CPU: the process's CPU time, every thread; CPU/wall under 1 on the pinned core is time "
                       f"other processes took from it); "
                       f"face found in {d['face_found']}/{d['frames']} frames, tracked landmarks moved on "
                       f"{d['landmarks_moved']}/{d['frames'] - 1}", t))
    return tables


def threads_notes(data: dict[str, Any]) -> list[str]:
    u = data["unpinned"]
    n = data["frames"]
    by = {k: 1e3 * v / n for k, v in u["by_thread_s"].items()}
    notes = [f"FaceMesh unpinned (may use CPUs {u['affinity']}): the process had {u['threads_before']} threads, "
             f"{u['threads_after_facemesh']} with a FaceMesh running; FaceMesh.detect used "
             f"{cores(u['cpu_s'], u['wall_s']):.2f} cores (CPU time / wall time over {n} moving frames; per "
             f"frame {by['main']:.2f} ms in the calling thread, {by['mediapipe']:.2f} ms in MediaPipe's threads, "
             f"{by['other']:.2f} ms in others), {u['median_ms']:.2f} ms median wall per frame; for the pinned "
             f"figures {data['pinned_tasks']} threads were moved to CPU {data['cpu']}"]
    p = u.get("paced")
    if p:
        m = p["frames"]
        pb = {k: 1e3 * v / m for k, v in p["by_thread_s"].items()}
        notes.append(f"landmarks + all effects paced at {FPS} fps, unpinned: {1e3 * p['cpu_s'] / m:.2f} ms CPU per "
                     f"frame for {1e3 * p['busy_s'] / m:.2f} ms busy (calling thread {pb['main']:.2f}, MediaPipe "
                     f"{pb['mediapipe']:.2f}, other threads {pb['other']:.2f} ms): "
                     f"{cores(p['cpu_s'], p['wall_s']):.3f} cores")
    return notes


def push_table(plain: list[dict[str, Any]], beauty: list[dict[str, Any]]) -> Table:
    t = Table(["push", "encoder fps", "engine cores", "beauty node", "src", "venc", "push",
               "supervisor + fork server"])
    for label, runs in (("without beauty", plain), ("with beauty", beauty)):
        def node(nid: str, runs: list[dict[str, Any]] = runs) -> str:
            vals = [cores(r["per_node_cpu_s"][nid], r["wall_s"]) for r in runs if nid in r["per_node_cpu_s"]]
            return Spread.of(vals).fmt(lambda x: f"{x:.3f}") if vals else "-"
        t.add(label, Spread.of([r["fps"] for r in runs]).fmt(fmt_rate),
              Spread.of([cores(r["cpu_s"], r["wall_s"]) for r in runs]).fmt(lambda x: f"{x:.3f}"),
              node(BEAUTY_NODE), node("src"), node("venc"), node("push"),
              Spread.of([cores(r["other_cpu_s"], r["wall_s"]) for r in runs]).fmt(lambda x: f"{x:.3f}"))
    return t


def run(settings: Settings) -> Result:
    res = Result(NAME)
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        res.skipped = "mediapipe is not installed (pip install 'mediaengine[beauty]', Python 3.9-3.12)"
        return res
    n_frames = 15 if settings.quick else 90  # the clip; each repetition plays it forwards and backwards
    t0 = time.monotonic()
    data = run_worker(settings, n_frames, settings.n(5, 2))
    worker_s = time.monotonic() - t0
    res.tables.extend(frame_tables(data))
    res.notes.extend(threads_notes(data))
    t0 = time.monotonic()
    plain, beauty, window = run_push(settings)
    push_s = time.monotonic() - t0
    res.tables.append(("the push: topologies/beauty_push.yaml (face clip 720p30 -> beauty level 3 -> libx264 -> "
                       "nginx-rtmp) "
                       f"and the same without beauty, alternating; {window:g} s windows, {len(plain)} "
                       "repetitions; CPU in cores, median [min..max]", push_table(plain, beauty)))
    with_face = [r["beauty"].get("frames_with_face", 0) / max(1, r["beauty"].get("frames", 0)) for r in beauty]
    res.notes.append(f"beauty found the face in {fmt_pct(100 * Spread.of(with_face).median)} of its frames; its "
                     f"own per-frame median (actor metrics, level 3): "
                     f"{Spread.of([r['beauty'].get('ms_median') or float('nan') for r in beauty]).fmt(_ms)} ms")

    everything = Spread.of(data["moving"]["cases"][EVERYTHING]["wall_ms"])
    still = Spread.of(data["still"]["cases"][EVERYTHING]["wall_ms"])
    push_cores = Spread.of([cores(r["cpu_s"], r["wall_s"]) for r in beauty])
    plain_cores = Spread.of([cores(r["cpu_s"], r["wall_s"]) for r in plain])
    res.targets = [
        Target("landmarks + all effects per 720p frame, moving face, one core (ms, absolute)", everything.median,
               "<=", TARGET_MS, f"{everything.median:.2f} ms"),
        Target("720p30 beauty push, whole engine (cores, absolute)", push_cores.median, "<=", TARGET_CORES,
               f"{push_cores.median:.3f} cores"),
    ]
    res.data = {"frames": data, "push": {"plain": plain, "beauty": beauty, "window_s": window},
                "seconds": {"per_frame_worker": worker_s, "push": push_s}}
    lm = Spread.of(data["moving"]["cases"][LANDMARKS]["wall_ms"]).median
    fx = Spread.of(data["moving"]["cases"][ALL_EFFECTS]["wall_ms"]).median
    res.headline = (f"720p beauty on one core: {everything.median:.2f} ms per frame moving ({lm:.2f} landmarks + "
                    f"{fx:.2f} effects), {still.median:.2f} ms still; 720p30 beauty push {push_cores.median:.2f} "
                    f"cores vs {plain_cores.median:.2f} without beauty")
    return res


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.beauty",
                                description="the beauty benchmark's per-frame worker (run by the suite)")
    p.add_argument("what", choices=["frames"])
    p.add_argument("--frames", type=int, default=90, help="frames of the clip (played forwards and backwards)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from ._procs import die_with_parent

    die_with_parent()
    args.out.write_text(json.dumps(frames_worker(args.frames, args.reps), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
