"""A microphone whose sound server goes away mid-stream, and comes back.

The engine records a private PulseAudio's `mic.monitor` (tests/pulse.py) mixed with a tone node into an
AAC recording.  While a 1 kHz tone plays into the microphone the sound server is stopped by its PID (the
closest a machine without a sound card gets to unplugging a USB microphone: the device is gone for every
client), then started again on the same socket a few seconds later.  Checked:

- the `microphone` node fails with 1322 `DeviceLostError` naming the device, and the supervisor keeps
  restarting it with its backoff (each attempt while the server is down fails to open the device);
- the mixer's output timeline never stops: the recording has no gap in its packets and the tone node plays
  at its level through the whole outage (the microphone contributes silence meanwhile);
- once the server is back the restarted microphone opens it (`mic_opened` again) and its tone reaches the
  recording again.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.audiocheck import decode_audio
from tests.enginekit import Engine, wait_for
from tests.helpers import ffprobe_json
from tests.pulse import RATE, PulseServer, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

MIC_HZ, TONE_HZ = 1000.0, 440.0
BLOCK = 960  # 20 ms

TOPOLOGY = """\
version: 1
name: mic_lost
supervisor: {intensity: 30, period_s: 60, backoff_initial_s: 0.2, backoff_max_s: 1.0}
nodes:
  - {id: mic,  kind: microphone,    options: {device: "pulse:mic.monitor", rate: 48000, channels: 1}}
  - {id: tone, kind: tone,          options: {freq_hz: 440, rate: 48000, channels: 1, volume: 20}}
  - {id: mix,  kind: mixer,         inputs: {in_mic: mic, in_tone: tone}, options: {rate: 48000, channels: 1,
                                                                                    latency_ms: 150}}
  - {id: aenc, kind: audio_encoder, inputs: {in: mix}, options: {bitrate_kbps: 128}}
  - {id: rec,  kind: recorder,      inputs: {audio: aenc}, options: {path: "${OUT}"}}
"""


def tone(seconds: float, amp: float = 0.3) -> np.ndarray:
    n = int(seconds * RATE)
    return (amp * np.sin(2 * np.pi * MIC_HZ * np.arange(n) / RATE) * 32767).astype(np.int16)


def play_in_background(pulse: PulseServer, pcm: np.ndarray) -> subprocess.Popen[bytes]:
    """`paplay` of `pcm` into the `mic` sink, fed from a thread (PulseServer.play blocks until the pipe took
    it all, i.e. nearly as long as it plays); the caller stops it by PID (`stop_process`)."""
    proc = subprocess.Popen(["paplay", "--device=mic", "--raw", f"--rate={RATE}", "--channels=1", "--format=s16le"],
                            env={**os.environ, **pulse.env()}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def feed() -> None:
        with contextlib.suppress(OSError, ValueError):  # the server (and paplay) may go away mid-write
            assert proc.stdin is not None
            proc.stdin.write(pcm.tobytes())
            proc.stdin.close()

    threading.Thread(target=feed, daemon=True).start()
    return proc


def level(x: np.ndarray, hz: float) -> np.ndarray:
    """Amplitude of `hz` in each 20 ms block (least squares on a sine and a cosine)."""
    t = np.arange(BLOCK) / RATE
    basis = np.stack([np.sin(2 * np.pi * hz * t), np.cos(2 * np.pi * hz * t), np.ones(BLOCK)], axis=1)
    n = len(x) // BLOCK
    coef, *_ = np.linalg.lstsq(basis, x[:n * BLOCK].reshape(n, BLOCK).T, rcond=None)
    return np.asarray(np.hypot(coef[0], coef[1]))


def mic_events(eng: Engine) -> list[dict[str, Any]]:
    return [e for e in eng.request("snapshot").get("events_recent", []) if e.get("node") == "mic"]


def test_a_sound_server_that_goes_away_is_1322_and_the_mix_goes_on(
        engine_runner: Callable[..., Engine], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    pulse = PulseServer(Path(tmp_path_factory.mktemp("pa", numbered=True)))  # a short socket path
    players: list[Any] = []
    try:
        pulse.start()
        topo = tmp_path / "mic_lost.yaml"
        topo.write_text(TOPOLOGY)
        out = tmp_path / "mic_lost.m4a"
        eng = engine_runner(topo, env={"OUT": str(out), **pulse.env()})
        eng.wait_running()
        t_start = time.monotonic()
        wait_for(lambda: eng.node("mic")["metrics"].get("actor", {}).get("frames", 0) > 50, 15,
                 "the microphone delivering")
        players.append(play_in_background(pulse, tone(30)))
        time.sleep(2.5)
        pulse.stop()  # the device is gone for every client
        t_gone = time.monotonic()
        lost = wait_for(lambda: [e for e in mic_events(eng) if e["name"] == "error"
                                 and e["data"].get("code") == 1322], 10, "the microphone's 1322")
        lost_after = time.monotonic() - t_gone
        print(f"1322 after {lost_after:.2f} s: {lost[0]['data']['message']}")
        assert "mic.monitor" in lost[0]["data"]["message"]
        mix_frames = eng.node("mix")["metrics"]["actor"]["frames_out"]
        time.sleep(3.0)
        assert eng.node("mix")["metrics"]["actor"]["frames_out"] > mix_frames + 100  # the mix goes on meanwhile
        failed_opens = [e["data"].get("code") for e in mic_events(eng) if e["name"] == "error"]
        restarts_while_gone = eng.node("mic")["restarts"]
        assert restarts_while_gone >= 2, failed_opens  # it keeps retrying while the device is away
        opened = len([e for e in mic_events(eng) if e["name"] == "mic_opened"])
        pulse.start()
        players.append(play_in_background(pulse, tone(4)))
        wait_for(lambda: len([e for e in mic_events(eng) if e["name"] == "mic_opened"]) > opened, 20,
                 "the microphone opened again")
        t_back = time.monotonic()
        wait_for(lambda: time.monotonic() - t_back > 3.0, 5, "3 s of the microphone back")
        wall_s = time.monotonic() - t_start
        eng.stop(20)
    finally:
        for p in players:
            stop_process(p)
        pulse.stop()
    print(f"error codes while the server was away: {failed_opens}; restarts: {restarts_while_gone}")

    pts = sorted(float(p["pts_time"]) for p in ffprobe_json(out, "-select_streams", "a:0", "-show_entries",
                                                            "packet=pts_time")["packets"])
    gaps = [(round(a, 3), round(b - a, 3)) for a, b in itertools.pairwise(pts) if b - a > 0.1]
    assert not gaps, gaps
    x = decode_audio(out, RATE, 1)[:, 0]
    print(f"recording {len(x) / RATE:.2f} s, packets {pts[0]:.2f}..{pts[-1]:.2f}, engine ran {wall_s:.2f} s")
    tone_level = level(x, TONE_HZ)[25:-10]  # the tone node: steady through everything (0.2 of full scale)
    dips = np.flatnonzero(np.abs(20 * np.log10(tone_level / 0.2 + 1e-9)) > 1.0)
    assert len(dips) == 0, f"the tone node dipped in blocks {dips[:10]} of {len(tone_level)}"
    mic = level(x, MIC_HZ) > 0.1
    heard = np.flatnonzero(mic)
    runs = np.split(heard, np.flatnonzero(np.diff(heard) > 5) + 1)
    print("microphone tone heard (s):", [(round(r[0] * BLOCK / RATE, 2), round(r[-1] * BLOCK / RATE, 2)) for r in runs])
    assert len(runs) == 2, "the microphone tone should be heard before the outage and after it, not during"
    silence = (runs[1][0] - runs[0][-1]) * BLOCK / RATE
    assert silence >= 3.0
