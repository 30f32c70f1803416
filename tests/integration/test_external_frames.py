"""Pictures and PCM pushed from Python (`Engine.push_video`/`push_audio`, sync and asyncio) into an
`external_source` node of a real engine.

- examples/external_frames.py pushed to nginx-rtmp for 8 s and pulled back with ffmpeg: every frame
  counter in order (or its drop counted by the node), the audio continuous
  (tools/external_frames_check.py; its 30 s 720p run is quoted in docs/capture.md);
- every accepted pixel format and sample format through the real engine into a recording, decoded
  and compared with what was drawn; every malformed push a typed error with the engine unaffected;
- a caller that stops: the encoder's keepalive holds the last picture, no hole in the recording.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from mediaengine.control.api import AsyncEngine, Engine
from mediaengine.sdk.errors import (
    EngineError,
    PushAudioError,
    PushDtypeError,
    PushPixelFormatError,
    PushShapeError,
    PushTargetError,
    UnknownTargetError,
)
from mediaengine.sdk.stamp import read

from tests.enginekit import wait_for
from tools.external_frames_check import load_example, run_check

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

W, H, FPS = 320, 240, 30
EXAMPLE = load_example()
PIX_FMTS = ["rgb24", "bgr24", "rgba", "bgra", "yuv420p", "nv12"]


def test_external_frames_example_reaches_nginx_in_order_with_continuous_audio(tmp_path: Path) -> None:
    report = run_check(tmp_path, 8.0, 320, 240, 30)
    video, audio, node = report["video"], report["audio"], report["node"]
    print("external_frames 8 s:", {k: video[k] for k in ("pictures", "first", "last", "missing", "repeated",
                                                         "node_drops", "encoder_dropped")},
          {k: audio[k] for k in ("seconds", "bad_windows", "packet_holes")},
          {k: node[k] for k in ("frames_in", "frames_emitted", "audio_resyncs")}, "load", report["load_average"])
    assert video["in_order"] and video["unreadable"] == 0, video
    assert video["last"] == report["pushed"]["frames"] - 1, video  # the last picture pushed was relayed
    # every missing picture is a counted drop: the node's, or the encoder's after a caller stall > keepalive
    assert video["missing"] <= video["node_drops"] + video["encoder_dropped"], video
    assert audio["present"] and audio["bad_windows"] == 0 and audio["seconds"] >= 7.0, audio
    # continuous; a hole only where this (loaded) machine stalled the caller past the node's jitter buffer,
    # and then counted by the node (`audio_resyncs`), never silent
    assert len(audio["packet_holes"]) <= node["audio_resyncs"], (audio, node)


def recording_topology(mp4: Path) -> dict[str, Any]:
    return {"version": 1, "name": "ext_rec", "nodes": [
        {"id": "app", "kind": "external_source", "options": {"width": W, "height": H, "fps": FPS, "rate": 48000,
                                                              "channels": 2}},
        {"id": "venc", "kind": "video_encoder", "inputs": {"in": "app/video"},
         "options": {"bitrate_kbps": 3000, "gop_s": 1, "keepalive_ms": 300}},
        {"id": "aenc", "kind": "audio_encoder", "inputs": {"in": "app/audio"}},
        {"id": "rec", "kind": "recorder", "inputs": {"video": "venc", "audio": "aenc"}, "options": {"path": str(mp4)}},
    ]}


def as_nv12(rgb: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    i420 = EXAMPLE.as_pix_fmt(rgb, "yuv420p")
    u = i420[H:H + H // 4].reshape(H // 2, W // 2)
    v = i420[H + H // 4:].reshape(H // 2, W // 2)
    return np.concatenate([i420[:H], np.stack([u, v], axis=2).reshape(H // 2, W)])


def picture(k: int) -> tuple[str, np.ndarray[Any, Any]]:
    pix_fmt = PIX_FMTS[k % len(PIX_FMTS)]
    rgb = EXAMPLE.draw(k, W, H)
    return pix_fmt, as_nv12(rgb) if pix_fmt == "nv12" else EXAMPLE.as_pix_fmt(rgb, pix_fmt)


#: (dtype, rate, channels) of the PCM chunks, in turn
PCM_KINDS = [(np.int16, 48000, 2), (np.float32, 44100, 1), (np.int16, 22050, 6), (np.float32, 96000, 2)]


def pcm(k: int) -> tuple[np.ndarray[Any, Any], int]:
    dtype, rate, channels = PCM_KINDS[k % len(PCM_KINDS)]
    n = rate // FPS
    t = (k * n + np.arange(n)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t)
    data = np.repeat(mono[:, None], channels, axis=1)
    return ((data * 32767).astype(np.int16) if dtype is np.int16 else data.astype(np.float32)), rate


def push_paced(eng: Engine, first: int, count: int) -> None:
    """Pictures first..first+count-1 and their sound, at the pace of an app rendering at 30 fps."""
    t0 = time.monotonic()
    for k in range(first, first + count):
        delay = t0 + (k - first) / FPS - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the caller's own frame clock, not a wait for the engine
        pix_fmt, array = picture(k)
        assert eng.push_video("app", array, pix_fmt=pix_fmt)
        data, rate = pcm(k)
        assert eng.push_audio("app", data, rate)


def node_metrics(eng: Engine, node: str) -> dict[str, Any]:
    return dict(next(n for n in eng.ps()["nodes"] if n["id"] == node).get("metrics", {}).get("actor", {}))


def test_every_format_through_a_real_engine_errors_leave_it_unaffected_and_a_pause_is_held(
        runtime_dir: Path, tmp_path: Path) -> None:
    mp4 = tmp_path / "ext.mp4"
    eng = Engine.start(recording_topology(mp4), runtime_dir=runtime_dir)
    try:
        eng.wait_running()
        push_paced(eng, 0, 30)
        # every malformed push: its typed error, raised in this process; nothing reaches the node
        bad: list[tuple[type[EngineError], Any]] = [
            (PushShapeError, lambda: eng.push_video("app", np.zeros((H, W + 2, 3), np.uint8))),
            (PushShapeError, lambda: eng.push_video("app", np.zeros((H, W), np.uint8), pix_fmt="nv12")),
            (PushDtypeError, lambda: eng.push_video("app", np.zeros((H, W, 3), np.float32))),
            (PushPixelFormatError, lambda: eng.push_video("app", np.zeros((H, W, 3), np.uint8), pix_fmt="hsv")),
            (PushDtypeError, lambda: eng.push_audio("app", np.zeros((100, 2), np.float64), 48000)),
            (PushShapeError, lambda: eng.push_audio("app", np.zeros((0, 2), np.int16), 48000)),
            (PushAudioError, lambda: eng.push_audio("app", np.zeros((100, 2), np.int16), 1000)),
            (PushAudioError, lambda: eng.push_audio("app", np.zeros((2, 4800), np.int16), 48000)),
            (PushPixelFormatError, lambda: eng.push_audio("app", np.zeros((100, 2), np.int16), 48000,
                                                          sample_fmt="s24")),
            (PushTargetError, lambda: eng.push_video("venc", np.zeros((H, W, 3), np.uint8))),
            (UnknownTargetError, lambda: eng.push_audio("nope", np.zeros((100, 2), np.int16), 48000)),
        ]
        for cls, call in bad:
            with pytest.raises(cls) as info:
                call()
            assert type(info.value) is cls and info.value.code in (*range(1212, 1217), 1404), info.value

        async def async_push() -> None:  # the asyncio API, attached to the same engine
            aeng = await AsyncEngine.attach(eng.engine_id, runtime_dir=runtime_dir)
            try:
                for k in range(30, 45):
                    pix_fmt, array = picture(k)
                    assert await aeng.push_video("app", array, pix_fmt=pix_fmt)
                    data, rate = pcm(k)
                    assert await aeng.push_audio("app", data, rate)
                    await asyncio.sleep(1 / FPS)
                with pytest.raises(PushShapeError):
                    await aeng.push_video("app", np.zeros((3, 3, 3), np.uint8))
            finally:
                await aeng.close()

        asyncio.run(async_push())
        push_paced(eng, 45, 15)
        # the caller stops: the encoder repeats the last picture (keepalive), the engine runs on
        before = node_metrics(eng, "venc").get("repeated_frames", 0)
        wait_for(lambda: node_metrics(eng, "venc").get("repeated_frames", 0) >= before + 10, 10,
                 "the encoder's keepalive while nobody pushes")
        push_paced(eng, 60, 30)
        m = wait_for(lambda: (m := node_metrics(eng, "app")).get("frames_emitted", 0) >= 90 and m, 10,
                     "the node to emit all 90 pictures")
        assert m["bad_messages"] == 0 and m["dropped"] == 0 and m["caller_dropped"] == 0 and m["late"] == 0, m
        # the first picture after the pause may fall in the time the keepalive repeats already covered: the
        # encoder drops it (pts must increase) and counts it
        encoder_dropped = wait_for(lambda: (v := node_metrics(eng, "venc")).get("frames_in", 0) >= 90 and v, 10,
                                   "the encoder to get every picture")["dropped_frames"]
        assert all(n["state"] == "running" and n["restarts"] == 0 for n in eng.ps()["nodes"]), eng.ps()
    finally:
        eng.stop()
    assert eng.returncode == 0, eng.log

    seen: list[tuple[float, int, float]] = []  # (pts, counter, mean error against the drawn picture)
    with av.open(str(mp4)) as c:
        for frame in c.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            s = read(rgb)
            assert s is not None, f"unreadable counter at {frame.time}"
            drawn = EXAMPLE.draw(s.counter, W, H)
            err = float(np.abs(rgb[40:, 80:].astype(np.int16) - drawn[40:, 80:].astype(np.int16)).mean())
            seen.append((float(frame.time or 0.0), s.counter, err))
    counters = [k for _, k, _ in sorted(seen)]
    assert all(b >= a for a, b in itertools.pairwise(counters)), counters
    missing = sorted(set(range(90)) - set(counters))
    assert len(missing) <= encoder_dropped <= 2 and set(missing) <= {60, 61}, (missing, encoder_dropped)
    worst: dict[str, float] = {}
    for _, k, err in seen:
        worst[PIX_FMTS[k % 6]] = max(worst.get(PIX_FMTS[k % 6], 0.0), err)
    assert set(worst) == set(PIX_FMTS) and max(worst.values()) < 6.0, worst  # each format: the picture drawn
    times = sorted(t for t, _, _ in seen)
    # the 1.5 s pause was filled by keepalive repeats; a pause shorter than keepalive_ms (0.3 s: switching
    # to the asyncio caller) just shows the last picture longer
    assert max(b - a for a, b in itertools.pairwise(times)) < 0.3 + 1.5 / FPS
    held = [k for _, k, _ in sorted(seen)].count(59)
    assert held >= 10, f"the last picture before the pause was shown {held} times"
    with av.open(str(mp4)) as c:
        assert c.streams.audio and c.streams.audio[0].rate == 48000 and c.streams.audio[0].channels == 2


def test_a_caller_faster_than_real_time_is_held_back_or_dropped_and_counted(runtime_dir: Path,
                                                                            tmp_path: Path) -> None:
    common = {"width": W, "height": H, "fps": FPS, "audio": False, "depth": 2, "latency_ms": 0}
    topo = {"version": 1, "name": "ext_policies", "nodes": [
        {"id": "held", "kind": "external_source", "options": {**common, "policy": "block"}},
        {"id": "lossy", "kind": "external_source", "options": {**common, "policy": "drop_newest"}},
        {"id": "s1", "kind": "snapshot", "inputs": {"in": "held/video"}, "options": {"path": str(tmp_path / "1.png")}},
        {"id": "s2", "kind": "snapshot", "inputs": {"in": "lossy/video"}, "options": {"path": str(tmp_path / "2.png")}},
    ]}
    eng = Engine.start(topo, runtime_dir=runtime_dir)
    try:
        eng.wait_running()
        n = 60
        pictures = [EXAMPLE.draw(k, W, H) for k in range(n)]
        t0 = time.monotonic()
        assert all(eng.push_video("held", p) for p in pictures)  # block: every push waits for room
        held_s = time.monotonic() - t0
        accepted = sum(eng.push_video("lossy", p) for p in pictures)  # drop_newest: never waits
        # drops on the caller's side reach the node with the next picture that gets through
        attempts = [n]

        def one_more() -> bool:
            attempts[0] += 1
            return eng.push_video("lossy", pictures[0])

        wait_for(one_more, 10, "a push to the lossy node getting through")
        m_held = wait_for(lambda: (m := node_metrics(eng, "held")).get("frames_emitted", 0) >= n and m, 15,
                          "the held node to emit every picture")
        m_lossy = wait_for(lambda: (m := node_metrics(eng, "lossy")).get("frames_in", 0) + m.get("caller_dropped", 0)
                           >= attempts[0] and m.get("queued", 1) == 0 and m, 15,
                           "the lossy node to account for every picture")
    finally:
        eng.stop()
    print(f"block: {n} pictures pushed as fast as possible took {held_s:.2f} s; drop_newest: {accepted} of {n} "
          f"taken, node {m_lossy}")
    # held back to real time: at most the queue (depth + the sockets' high-water marks) ahead of 30 fps
    assert held_s >= (n - 12) / FPS, held_s
    assert m_held["dropped"] == m_held["caller_dropped"] == 0
    # dropped, and every drop counted: on the caller's side (False, `caller_dropped`) or in the node
    assert m_lossy["frames_emitted"] + m_lossy["dropped"] + m_lossy["caller_dropped"] == attempts[0], m_lossy
    assert m_lossy["caller_dropped"] == attempts[0] - accepted - 1, m_lossy
    assert m_lossy["dropped"] + m_lossy["caller_dropped"] > 0, m_lossy
