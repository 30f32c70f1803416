"""Benchmark `capture_encode`: 1080p30 camera -> H.264 -> recorder, with a yuv420p and an rgb24 edge.

`cam (camera, FFmpeg's lavfi device: testsrc2 1920x1080 at 30 fps, read in real time) -> venc
(video_encoder) -> rec (recorder, MP4)`, run twice per repetition: once as the loader chooses (the
camera hands its decoder's I420 straight to the encoder: a yuv420p edge), once with `pix_fmt: rgb24`
forced on the camera (the camera converts to RGB, the encoder converts back: an rgb24 edge, what
every edge was before pixel-format negotiation).  Repetitions alternate the two, so drifts in
machine load hit both.  Each run is measured over the same window once warm: CPU of every process of
the engine and of each node (per encoded frame), frames encoded (the rate held), and the bytes the
camera->encoder ring moved per frame (the edge's frame size, from the engine's own format).
"""

from __future__ import annotations

import time
from typing import Any

from mediaengine.sdk.formats import VideoFormat
from mediaengine.topology.loader import load_topology

from ._common import Result, Settings, Spread, Table, Target, fmt_ms, fmt_num, fmt_x, ratios
from ._engine import BenchEngine
from ._procs import TreeSampler

NAME = "capture_encode"
WIDTH, HEIGHT, FPS = 1920, 1080, 30
DEVICE = f"lavfi:testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}"


def topology(pix_fmt: str, path: str) -> dict[str, Any]:
    return {"version": 1, "name": f"capture_encode_{pix_fmt}", "nodes": [
        {"id": "cam", "kind": "camera",
         "options": {"device": DEVICE, "width": WIDTH, "height": HEIGHT, "fps": FPS, "pix_fmt": pix_fmt}},
        {"id": "venc", "kind": "video_encoder", "inputs": {"in": "cam"},
         "options": {"bitrate_kbps": 4000, "preset": "ultrafast", "gop_s": 2}},
        {"id": "rec", "kind": "recorder", "inputs": {"video": "venc"}, "options": {"path": path}},
    ]}


def _frames(eng: BenchEngine) -> int:
    node = next(n for n in eng.ps()["nodes"] if n["id"] == "venc")
    return int(node["metrics"].get("actor", {}).get("frames_encoded", 0))


def measure(pix_fmt: str, settings: Settings, rep: int, warm_s: float, window_s: float) -> dict[str, Any]:
    """One run: `pix_fmt` is what the camera's option says (auto -> yuv420p edge, rgb24 forced)."""
    path = f"{settings.workdir}/capture-{pix_fmt}-{rep}.mp4"
    with BenchEngine.start(topology(pix_fmt, path), settings.workdir) as eng:
        eng.wait_running()
        eng.wait_metrics(20)
        time.sleep(warm_s)
        pids = eng.node_pids()
        f0 = _frames(eng)
        sampler = TreeSampler([eng.pid], interval_s=0.5)
        sampler.start()
        time.sleep(window_s)
        sampler.stop()
        f1 = _frames(eng)
        eng.check_alive()
        by_pid = sampler.cpu_by_pid()
        eng.stop()
    frames = max(1, f1 - f0)
    # the edge's format as the loader chose it (the engine was given exactly this topology)
    (edge,) = [e for e in load_topology(topology(pix_fmt, path)).edges if e.src == "cam"]
    fmt = edge.format
    assert isinstance(fmt, VideoFormat)
    return {"pix_fmt": fmt.pix_fmt, "edge": fmt.describe(), "frames": f1 - f0, "wall_s": sampler.wall_s,
            "fps": (f1 - f0) / sampler.wall_s,
            "cpu_s": sampler.cpu_s, "cpu_ms_per_frame": 1000 * sampler.cpu_s / frames,
            "node_ms_per_frame": {nid: 1000 * by_pid.get(pid, 0.0) / frames for nid, pid in pids.items()},
            "bytes_per_frame": fmt.frame_bytes}


def run(settings: Settings) -> Result:
    res = Result(NAME)
    reps = settings.n(5, 1)
    window = settings.secs(10.0, 4.0)
    warm = settings.secs(2.0, 1.0)
    runs: dict[str, list[dict[str, Any]]] = {"yuv420p": [], "rgb24": []}  # by the edge's pixel format
    for i in range(reps):
        runs["yuv420p"].append(measure("auto", settings, i, warm, window))
        runs["rgb24"].append(measure("rgb24", settings, i, warm, window))

    table = Table(["camera -> encoder edge", "bytes moved per frame", "CPU per frame (all)", "camera",
                   "encoder", "recorder", "frames/s"])
    for rs in runs.values():
        table.add(rs[0]["edge"], fmt_num(rs[0]["bytes_per_frame"]),
                  Spread.of([r["cpu_ms_per_frame"] / 1000 for r in rs]).fmt(fmt_ms),
                  *(Spread.of([r["node_ms_per_frame"].get(n, 0.0) / 1000 for r in rs]).fmt(fmt_ms)
                    for n in ("cam", "venc", "rec")),
                  Spread.of([r["fps"] for r in rs]).fmt(lambda x: fmt_num(x, 1)))
    res.tables.append((f"1920x1080@30 lavfi camera -> libx264 ultrafast -> MP4; {window:g} s windows, {reps} "
                       "repetitions (alternating), median [min..max]", table))
    cpu = ratios([r["cpu_s"] / max(1, r["frames"]) for r in runs["yuv420p"]],
                 [r["cpu_s"] / max(1, r["frames"]) for r in runs["rgb24"]])
    yuv_fps = Spread.of([r["fps"] for r in runs["yuv420p"]]).median
    res.targets = [
        Target("yuv420p edge: CPU per frame / rgb24 edge", cpu.median, "<=", 1.0, fmt_x(cpu.median)),
        Target("yuv420p edge: bytes per frame / rgb24 edge",
               runs["yuv420p"][0]["bytes_per_frame"] / runs["rgb24"][0]["bytes_per_frame"], "<=", 0.5),
        Target("yuv420p edge holds frames/s", yuv_fps, ">=", 29.0, fmt_num(yuv_fps, 1)),
    ]
    res.data = runs

    def med(pix: str, node: str | None = None) -> float:
        return Spread.of([r["cpu_ms_per_frame"] if node is None else r["node_ms_per_frame"].get(node, 0.0)
                          for r in runs[pix]]).median

    res.notes.append(f"medians per frame, yuv420p vs rgb24 edge: all {med('yuv420p'):.1f} vs {med('rgb24'):.1f} ms, "
                     f"camera {med('yuv420p', 'cam'):.1f} vs {med('rgb24', 'cam'):.1f} ms, encoder "
                     f"{med('yuv420p', 'venc'):.1f} vs {med('rgb24', 'venc'):.1f} ms")
    res.headline = (f"1080p30 capture -> encode with a yuv420p edge: {fmt_x(cpu.median)} the CPU per frame of an "
                    f"rgb24 edge (paired; medians {med('yuv420p'):.1f} vs {med('rgb24'):.1f} ms), half the bytes "
                    f"per frame ({fmt_num(runs['yuv420p'][0]['bytes_per_frame'])} vs "
                    f"{fmt_num(runs['rgb24'][0]['bytes_per_frame'])})")
    return res
