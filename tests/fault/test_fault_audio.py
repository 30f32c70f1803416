"""Fault cases of the audio actors during an audio-only push to nginx-rtmp (the fault matrix's audio rows).

One engine runs a microphone (a private PulseAudio's `mic.monitor`) through `denoise`, and `music` (a
looping file of a steady 440 Hz tone), mixed, AAC, pushed to nginx-rtmp with no video, and plays the
microphone to the `monitor` sink (`ear`, an audio_out); Debian's ffmpeg records what the server relays for
the whole test.  Faults, one after the other, through `mediaengine fault` (the engine runs with
--allow-faults): kill, hang and crash of each audio actor (music, mic, dn, mix, ear), about 47 s.

Checked on the relayed audio and the engine: every victim restarted exactly once (no restart loop), the
RTMP connection was never lost, the stream's audio packets have no gap anywhere (the mixer keeps its
clock: a missing input is silence), and each hole in the music is measured (printed as AUDIO-FAULT rows
for docs/fault-matrix.md).  The bound asserted for a hole is the restart (kill) or the heartbeat timeout
plus the restart (hang), crash like kill, with a margin for a loaded 2-core machine.
"""

from __future__ import annotations

import itertools
import json
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.audiocheck import decode_audio
from tests.enginekit import Engine, wait_for
from tests.fault.test_fault_matrix import fault, injected_at
from tests.helpers import ffprobe_json, start_recorder
from tests.pulse import PulseServer, pulse_server, stop_process
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.fault, pytest.mark.rtmp, pytest.mark.timeout(240)]
__all__ = ["pulse_server"]

RATE = 48000
HZ = 440.0
BLOCK = 960  # 20 ms
# every audio actor x kill, hang, crash (the in-ear output `ear` plays the microphone to the `monitor` sink)
CASES = [(node, name) for node in ("music", "mic", "dn", "mix", "ear") for name in ("kill", "hang", "crash")]
# the longest hole in the music each case may leave (s): a restart, or the heartbeat timeout and a restart
HOLE_S = {"kill": 1.5, "crash": 1.5, "hang": 3.5}

TOPOLOGY = """\
version: 1
name: audio_faults
# 15 restarts on purpose within about a minute: more than the default intensity (10) allows
supervisor: {intensity: 20, period_s: 60}
nodes:
  - {id: mic,   kind: microphone,    options: {device: "pulse:mic.monitor", rate: 48000, channels: 1}}
  - {id: dn,    kind: denoise,       inputs: {in: mic}}
  - {id: music, kind: music,         options: {path: "${MUSIC}", loop: true}}
  - {id: mix,   kind: mixer,         inputs: {in_voice: dn, in_music: music},
     options: {rate: 48000, channels: 2, latency_ms: 60, pads: {in_music: {volume: 50}}}}
  - {id: aenc,  kind: audio_encoder, inputs: {in: mix}, options: {bitrate_kbps: 96}}
  - {id: push,  kind: rtmp_sender,   inputs: {audio: aenc}, options: {url: "${PUSH_URL}"}}
  - {id: ear,   kind: audio_out,     inputs: {in: mic}, options: {device: "pulse:monitor"}}
"""


def write_tone(path: Path, seconds: float) -> None:
    n = round(seconds * RATE)
    x = (0.5 * np.sin(2 * np.pi * HZ * np.arange(n) / RATE) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(x.tobytes())


def holes(x: np.ndarray, level: float) -> list[tuple[float, float]]:
    """(start s, length s) of every run of 20 ms blocks where the 440 Hz tone is below half its level."""
    n = len(x) // BLOCK
    t = np.arange(BLOCK) / RATE
    basis = np.stack([np.sin(2 * np.pi * HZ * t), np.cos(2 * np.pi * HZ * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x[:n * BLOCK].reshape(n, BLOCK).T, rcond=None)
    quiet = np.hypot(coef[0], coef[1]) < level / 2
    out = []
    for k, grp in itertools.groupby(enumerate(quiet), key=lambda p: p[1]):
        idx = [i for i, _ in grp]
        if k:
            out.append((idx[0] * BLOCK / RATE, len(idx) * BLOCK / RATE))
    return out


def test_audio_actors_killed_hung_and_crashed_during_a_push(engine_runner: Callable[..., Engine],
                                                            rtmp_server: RtmpServer, pulse_server: PulseServer,
                                                            tmp_path: Path) -> None:
    tone = tmp_path / "tone.wav"
    write_tone(tone, 3.0)
    topo = tmp_path / "audio_faults.yaml"
    topo.write_text(TOPOLOGY)
    url = rtmp_server.url(stream="afault")
    eng = engine_runner(topo, "--allow-faults", env={"PUSH_URL": url, "MUSIC": str(tone), **pulse_server.env()})
    eng.wait_running()
    wait_for(lambda: eng.node("push")["metrics"].get("actor", {}).get("state") == "connected", 20, "connected")
    push_pid = eng.node("push")["pid"]
    flv = tmp_path / "afault.flv"
    recorder = start_recorder(url, flv, rw_timeout_s=5.0)
    rows = []
    try:
        wait_for(lambda: any(not c.publishing for c in rtmp_server.clients("afault")), 15, "the recorder playing")
        t_rec = time.time()
        wait_for(lambda: time.time() - t_rec > 1.5, 5, "music before the faults")
        for node, name in CASES:
            wait_for(lambda: all(n["state"] == "running" for n in eng.ps()["nodes"]), 20, f"running before {name}")
            before = eng.node(node)["restarts"]
            t0 = time.time()
            assert fault(eng, node, name)["fault"] == name
            t_inj = injected_at(eng, node, t0)
            wait_for(lambda n=node, b=before: eng.node(n)["restarts"] > b and eng.node(n)["state"] == "running",
                     15, f"{node} back after {name}")
            rows.append({"node": node, "fault": name, "t": t_inj - t_rec, "back_s": round(time.time() - t_inj, 2)})
            t_back = time.time()
            wait_for(lambda tb=t_back: time.time() - tb > 1.2, 5, "music after the restart")
        restarts = {n["id"]: n["restarts"] for n in eng.ps()["nodes"]}
        assert eng.node("push")["pid"] == push_pid, "the sender restarted"
        losses = eng.node("push")["metrics"]["actor"].get("connection_losses", 0)
        eng.stop(30)
        recorder.wait(30)
    finally:
        stop_process(recorder)
    for node in ("music", "mic", "dn", "mix", "ear"):  # once per fault on it: no restart loop
        assert restarts[node] == sum(1 for n, _ in CASES if n == node), restarts
    assert restarts["push"] == 0 and restarts["aenc"] == 0 and not losses, (restarts, losses)

    pts = sorted(float(p["pts_time"]) for p in ffprobe_json(flv, "-select_streams", "a:0", "-show_entries",
                                                             "packet=pts_time")["packets"])
    pkt_gaps = [(round(a, 2), round(b - a, 3)) for a, b in itertools.pairwise(pts) if b - a > 0.1]
    x = decode_audio(flv, RATE, 1)[:, 0]
    found = [h for h in holes(x, 0.25) if 0.5 < h[0] < len(x) / RATE - 1.0]  # not the stream's start or end
    # each hole belongs to the last fault injected before it began (stream time ~ wall time since the
    # recorder started; 0.5 s of slack for the recorder's own start)
    for row in rows:
        row["music_hole_s"] = 0.0
    for start, length in found:
        before = [row for row in rows if row["t"] <= start + 0.5]
        if before:
            row = before[-1]
            row["music_hole_s"] = round(max(row["music_hole_s"], length), 2)
    for row in rows:
        print("\nAUDIO-FAULT " + json.dumps(row))
    assert not pkt_gaps, f"gaps in the relayed audio packets: {pkt_gaps}"
    for row in rows:
        assert row["music_hole_s"] <= HOLE_S[row["fault"]], row
    # the voice side (microphone, denoise, in-ear output) leaves the music alone
    assert all(row["music_hole_s"] == 0 for row in rows if row["node"] in ("mic", "dn", "ear")), rows
