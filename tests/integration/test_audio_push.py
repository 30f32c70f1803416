"""The audio path against a real sound server and a real RTMP server.

A private PulseAudio (tests/pulse.py) gives the engine a microphone: the test plays a known tone into the
null sink `mic`, the `microphone` actor captures `mic.monitor`, the `mixer` mixes it with a `tone` node,
and the AAC stream is pushed to nginx-rtmp without any video track.  Debian's ffmpeg copies what the server
relays, and the decoded audio is measured: one audio stream and no video, the microphone tone's frequency
(within 1 Hz) and level (within 1 dB), the tone node at the level the mixer set, no dropout while the
microphone tone plays, and after a master mute digital silence while the stream goes on.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.audiocheck import beeps_heard, db, decode_audio, tone_frequency, write_beeps
from tests.enginekit import Engine, wait_for
from tests.helpers import ffprobe_json, start_recorder
from tests.pulse import PulseServer, finish_play, pulse_server, stop_process
from tools.lipsync import run as lipsync_run
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.rtmp, pytest.mark.timeout(120)]
__all__ = ["pulse_server"]  # the fixture, used by name

RATE = 48000
MIC_HZ, MIC_AMP = 1000.0, 0.25  # what is played into the microphone
TONE_HZ, TONE_VOLUME, TONE_PAD_VOLUME = 440.0, 30.0, 50.0  # the tone node at 30 %, its mixer pad at 50 %
BLOCK = 960  # 20 ms: a dropout of one 10 ms frame inside a block lowers its level by 6 dB

TOPOLOGY = f"""\
version: 1
name: mic_push
nodes:
  - {{id: mic,  kind: microphone,    options: {{device: "pulse:mic.monitor", rate: 48000, channels: 1}}}}
  - {{id: tone, kind: tone,          options: {{freq_hz: {TONE_HZ}, rate: 44100, channels: 2, volume: {TONE_VOLUME},
                                              samples_per_frame: 1024}}}}
  - {{id: mix,  kind: mixer,         inputs: {{in_mic: mic, in_tone: tone}},
      options: {{rate: 48000, channels: 2, latency_ms: 150, pads: {{in_tone: {{volume: {TONE_PAD_VOLUME}}}}}}}}}
  - {{id: aenc, kind: audio_encoder, inputs: {{in: mix}}, options: {{bitrate_kbps: 128}}}}
  - {{id: push, kind: rtmp_sender,   inputs: {{audio: aenc}}, options: {{url: "${{PUSH_URL}}"}}}}
"""


def levels(x: np.ndarray, freqs: tuple[float, ...], block: int = BLOCK, rate: int = RATE) -> np.ndarray:
    """Amplitude of each frequency in each block of mono audio, fitted jointly (rows: blocks)."""
    t = np.arange(block) / rate
    cols = [f(2 * np.pi * fr * t) for fr in freqs for f in (np.sin, np.cos)] + [np.ones(block)]
    basis = np.stack(cols, axis=1)
    n = len(x) // block
    coef, *_ = np.linalg.lstsq(basis, x[:n * block].reshape(n, block).T.astype(np.float64), rcond=None)
    return np.stack([np.hypot(coef[2 * i], coef[2 * i + 1]) for i in range(len(freqs))], axis=1)


def test_microphone_and_tone_mixed_and_pushed_without_video(
        engine_runner: Callable[..., Engine], rtmp_server: RtmpServer, pulse_server: PulseServer,
        tmp_path: Path) -> None:
    topo = tmp_path / "mic_push.yaml"
    topo.write_text(TOPOLOGY)
    url = rtmp_server.url(stream="mic")
    eng = engine_runner(topo, "--duration", "12", env={"PUSH_URL": url, **pulse_server.env()})
    eng.wait_running()
    wait_for(lambda: eng.node("push")["metrics"].get("actor", {}).get("state") == "connected", 20,
             "the push connected")
    devices = eng.request("command", node="mic", command="devices", args={})  # `mediaengine ctl mic devices`
    assert any(d["name"] == "pulse" and d["inputs"] > 0 for d in devices), devices
    flv = tmp_path / "mic.flv"
    recorder = start_recorder(url, flv)
    try:
        wait_for(lambda: any(not c.publishing for c in rtmp_server.clients("mic")), 15, "the recorder playing")
        wait_for(lambda: eng.node("mic")["metrics"].get("actor", {}).get("frames", 0) > 50, 15,
                 "the microphone delivering (PulseAudio starts a monitor source lazily)")
        n = int(3.0 * RATE)
        tone = (MIC_AMP * np.sin(2 * np.pi * MIC_HZ * np.arange(n) / RATE) * 32767).astype(np.int16)
        finish_play(pulse_server.play(tone), 15)
        mic = eng.node("mic")["metrics"]["actor"]
        mix = eng.node("mix")["metrics"]["actor"]
        eng.request("set", node="mix", options={"mute": True})
        t_mute = time.monotonic()
        wait_for(lambda: time.monotonic() - t_mute > 1.2, 5, "1.2 s of muted mix")
        eng.stop(20)
        recorder.wait(30)
    finally:
        stop_process(recorder)
    streams = ffprobe_json(flv, "-show_streams")["streams"]
    assert [s["codec_type"] for s in streams] == ["audio"] and streams[0]["codec_name"] == "aac"
    assert int(streams[0]["sample_rate"]) == RATE and streams[0]["channels"] == 2

    x = decode_audio(flv, RATE, 2)[:, 0]
    lv = levels(x, (MIC_HZ, TONE_HZ))
    on = np.flatnonzero(lv[:, 0] > MIC_AMP / 2)
    assert len(on) > 0, f"the microphone tone never reached the stream; mic metrics {mic}"
    run = lv[on[0] + 5:on[-1] - 2]  # the tone's middle, away from its start and end
    assert len(run) * BLOCK / RATE > 2.7, f"tone heard for {len(on) * BLOCK / RATE:.2f}s of 3"
    mic_db = db(float(np.median(run[:, 0])) / MIC_AMP)
    assert abs(mic_db) <= 1.0, f"microphone tone at {mic_db:+.2f} dB"
    dips = [(i, round(db(v / MIC_AMP), 1)) for i, v in enumerate(run[:, 0]) if abs(db(v / MIC_AMP)) > 1.0]
    assert not dips, f"dropouts (block, dB) in the microphone tone: {dips[:10]}; mic {mic}, mixer {mix}"
    segment = x[(on[0] + 5) * BLOCK:(on[-1] - 2) * BLOCK]
    assert tone_frequency(segment, RATE) == pytest.approx(MIC_HZ, abs=1.0)
    tone_expected = TONE_VOLUME / 100 * TONE_PAD_VOLUME / 100
    tone_db = db(float(np.median(run[:, 1])) / tone_expected)
    assert abs(tone_db) <= 1.0, f"tone node at {tone_db:+.2f} dB of its mixer setting"
    assert mic["frames"] > 250 and abs(mic["drift_ms"]) < 10, mic
    # the master mute: digital silence at the end, and the stream went on through it (no gap in the packets)
    silent = np.flatnonzero(np.abs(x) >= 1e-4)
    assert (len(x) - 1 - silent[-1]) / RATE > 0.8, "no digital silence after the mute"
    pts = sorted(float(p["pts_time"]) for p in ffprobe_json(flv, "-select_streams", "a:0", "-show_entries",
                                                             "packet=pts_time")["packets"])
    gaps = [(round(a, 3), round(b - a, 3)) for a, b in itertools.pairwise(pts) if b - a > 0.1]
    assert not gaps and pts[-1] - pts[0] > 4, (gaps, pts[-1] - pts[0], mix)


# the microphone's other rates and stereo, all at once on the same PulseAudio source: each through its own
# AAC encoder (at the microphone's rate) into its own audio-only recording
MIC_FORMATS = [(16000, 1), (32000, 1), (44100, 2), (48000, 2)]
RATES_TOPOLOGY = "version: 1\nname: mic_rates\nnodes:\n" + "".join(
    f"  - {{id: mic{r}x{c}, kind: microphone, options: {{device: 'pulse:mic.monitor', rate: {r}, channels: {c}}}}}\n"
    f"  - {{id: aenc{r}x{c}, kind: audio_encoder, inputs: {{in: mic{r}x{c}}}, options: {{bitrate_kbps: 96}}}}\n"
    f"  - {{id: rec{r}x{c}, kind: recorder, inputs: {{audio: aenc{r}x{c}}}, "
    f"options: {{path: '${{OUT}}/mic{r}x{c}.m4a'}}}}\n"
    for r, c in MIC_FORMATS)


def test_microphone_at_16_32_and_44_1_khz_and_in_stereo(
        engine_runner: Callable[..., Engine], pulse_server: PulseServer, tmp_path: Path) -> None:
    topo = tmp_path / "mic_rates.yaml"
    topo.write_text(RATES_TOPOLOGY)
    eng = engine_runner(topo, "--duration", "30", env={"OUT": str(tmp_path), **pulse_server.env()})
    eng.wait_running()
    mics = [f"mic{r}x{c}" for r, c in MIC_FORMATS]

    def frames() -> list[int]:
        return [int(eng.node(m)["metrics"].get("actor", {}).get("frames", 0)) for m in mics]

    wait_for(lambda: min(frames()) > 50, 20, "every microphone delivering")
    n = int(3.0 * RATE)
    tone = (MIC_AMP * np.sin(2 * np.pi * MIC_HZ * np.arange(n) / RATE) * 32767).astype(np.int16)
    finish_play(pulse_server.play(tone), 15)
    played = frames()  # then 0.5 s more from each microphone: the tone's end is captured
    wait_for(lambda: all(f >= p + 50 for f, p in zip(frames(), played, strict=True)), 10, "0.5 s more captured")
    metrics = {m: eng.node(m)["metrics"]["actor"] for m in mics}
    assert eng.stop(20) == 0, eng.log
    for (rate, channels), mic in zip(MIC_FORMATS, mics, strict=True):
        path = tmp_path / f"{mic}.m4a"
        (stream,) = ffprobe_json(path, "-show_streams")["streams"]
        assert (stream["codec_name"], int(stream["sample_rate"]), stream["channels"]) == ("aac", rate, channels)
        x = decode_audio(path, rate, channels)
        block = rate // 50  # 20 ms
        for ch in range(channels):  # a mono tone reaches each channel of a stereo capture
            lv = levels(x[:, ch], (MIC_HZ,), block, rate)[:, 0]
            on = np.flatnonzero(lv > MIC_AMP / 2)
            assert len(on) > 0, f"{mic}: the tone never reached channel {ch}; {metrics[mic]}"
            run = lv[on[0] + 5:on[-1] - 2]
            assert len(run) * block / rate > 2.7, f"{mic}: tone heard for {len(on) * block / rate:.2f}s of 3"
            dips = [(i, round(db(v / MIC_AMP), 1)) for i, v in enumerate(run) if abs(db(v / MIC_AMP)) > 1.0]
            assert not dips, f"{mic} channel {ch}: dropouts or a level off by > 1 dB (block, dB): {dips[:10]}"
            segment = x[(on[0] + 5) * block:(on[-1] - 2) * block, ch]
            assert tone_frequency(segment, rate) == pytest.approx(MIC_HZ, abs=1.0), mic
        assert abs(metrics[mic]["drift_ms"]) < 10, metrics[mic]


def events_of(eng: Engine, node: str) -> list[dict[str, Any]]:
    return [e for e in eng.request("snapshot").get("events_recent", []) if e.get("node") == node]


def test_audio_only_topology_plays_music_live_pause_resume_seek_loop_stop(
        engine_runner: Callable[..., Engine], rtmp_server: RtmpServer, pulse_server: PulseServer,
        tmp_path: Path) -> None:
    """topologies/audio_only.yaml as it ships (microphone + music -> mixer -> AAC -> RTMP, no video), driven
    live: `start` a file of numbered beeps, `pause`, `resume`, `seek` back, `loop` turned on, `stop` after the
    loop; what nginx relays has one audio stream, the beeps in order (again after the seek, and from the top
    after the loop, one lead later), and the paused stretch silent."""
    beeps = tmp_path / "beeps.wav"
    write_beeps(beeps, 6, lead_s=1.0)  # the lead: the recorder, listed as playing, may still be joining
    url = rtmp_server.url(stream="audio_only")
    eng = engine_runner("topologies/audio_only.yaml", "--set", "music.loop=false",
                        env={"PUSH_URL": url, "MIC_DEVICE": "pulse:mic.monitor", **pulse_server.env()})
    eng.wait_running()
    wait_for(lambda: eng.node("push")["metrics"].get("actor", {}).get("state") == "connected", 20,
             "the push connected")
    flv = tmp_path / "audio_only.flv"
    recorder = start_recorder(url, flv)
    try:
        wait_for(lambda: any(not c.publishing for c in rtmp_server.clients("audio_only")), 15, "the recorder playing")
        assert eng.request("command", node="music", command="start", args={"path": str(beeps)})["state"] == "playing"
        wait_for(lambda: eng.request("command", node="music", command="status", args={})["position_s"] >= 2.2, 10,
                 "beeps 0, 1 and 2")
        eng.request("command", node="music", command="pause", args={})
        t_pause = time.monotonic()
        wait_for(lambda: time.monotonic() - t_pause >= 1.0, 5, "a second of pause")
        eng.request("command", node="music", command="resume", args={})
        paused_s = time.monotonic() - t_pause
        wait_for(lambda: eng.request("command", node="music", command="status", args={})["position_s"] >= 3.25, 10,
                 "beeps 3 and 4")
        # back to just before beep 1, and loop from now on (a live option)
        assert eng.request("command", node="music", command="seek", args={"s": 1.4})["position_s"] == 1.4
        assert eng.request("set", node="music", options={"loop": True}) == {"loop": True}
        wait_for(lambda: any(e["name"] == "music_looped" for e in events_of(eng, "music")), 15, "music_looped")
        wait_for(lambda: eng.request("command", node="music", command="status", args={})["position_s"] >= 1.25, 10,
                 "beep 0 after the loop")
        eng.request("command", node="music", command="stop", args={})
        t_stop = time.monotonic()
        wait_for(lambda: time.monotonic() - t_stop > 1.0, 5, "the end in the stream")
        names = [e["name"] for e in events_of(eng, "music")
                 if e["name"].startswith("music_") and e["name"] != "music_progress"]
        eng.stop(20)
        recorder.wait(30)
    finally:
        stop_process(recorder)
    assert names == ["music_started", "music_paused", "music_resumed", "music_seeked", "music_looped",
                     "music_stopped"], names
    streams = ffprobe_json(flv, "-show_streams")["streams"]
    assert [s["codec_type"] for s in streams] == ["audio"], streams
    x = decode_audio(flv, RATE, 2)[:, 0]
    heard = beeps_heard(x, RATE, 6)
    # in order; twice only through the seek back (1..4 again) and the loop (0 again)
    assert [i for _, i in heard] == [0, 1, 2, 3, 4, 1, 2, 3, 4, 5, 0], heard
    # the loop starts the file again at once: the rest of beep 5's half second, then the 1 s lead
    assert heard[10][0] - heard[9][0] == pytest.approx(0.5 + 1.0, abs=0.15), heard
    pause_gap = heard[3][0] - heard[2][0]
    assert pause_gap == pytest.approx(0.5 + paused_s, abs=0.15), (pause_gap, paused_s)
    a, b = round((heard[2][0] + 0.3) * RATE), round((heard[3][0] - 0.05) * RATE)
    assert np.abs(x[a:b]).max() < 1e-3  # the pause (and the silent microphone): silence


MONITOR_TOPOLOGY = """\
version: 1
name: monitoring
nodes:
  - {id: mic,  kind: microphone,    options: {device: "pulse:mic.monitor", rate: 48000, channels: 1}}
  - {id: ear,  kind: audio_out,     inputs: {in: mic}, options: {device: "pulse:monitor"}}
  - {id: gone, kind: audio_out,     inputs: {in: mic}, options: {device: "pulse:no_such_sink", retry_s: 0.5}}
  - {id: mix,  kind: mixer,         inputs: {in_mic: mic}, options: {rate: 48000, channels: 1}}
  - {id: aenc, kind: audio_encoder, inputs: {in: mix}, options: {bitrate_kbps: 64}}
  - {id: push, kind: rtmp_sender,   inputs: {audio: aenc}, options: {url: "${PUSH_URL}"}}
"""


def test_in_ear_monitoring_plays_the_voice_and_a_missing_device_does_not_touch_the_push(
        engine_runner: Callable[..., Engine], rtmp_server: RtmpServer, pulse_server: PulseServer,
        tmp_path: Path) -> None:
    """A tone 'spoken' into `mic` is heard on `monitor.monitor` (what the streamer's ears get), with the
    capture-to-output latency measured; an audio_out whose device does not exist reports 1320 events, is
    never restarted, and the push stays connected."""
    topo = tmp_path / "monitoring.yaml"
    topo.write_text(MONITOR_TOPOLOGY)
    eng = engine_runner(topo, "--duration", "20", env={"PUSH_URL": rtmp_server.url(stream="ear"),
                                                      **pulse_server.env()})
    eng.wait_running()
    wait_for(lambda: eng.node("mic")["metrics"].get("actor", {}).get("frames", 0) > 50, 15, "the microphone")
    heard = tmp_path / "monitor.raw"
    rec = pulse_server.record("monitor.monitor", heard)
    try:
        n = int(2.0 * RATE)
        finish_play(pulse_server.play((0.3 * np.sin(2 * np.pi * 700 * np.arange(n) / RATE) * 32767)
                                      .astype(np.int16)), 10)
        ear = eng.node("ear")["metrics"]["actor"]
        gone = eng.node("gone")
        push = eng.node("push")
        events = [e for e in eng.request("snapshot").get("events_recent", []) if e.get("node") == "gone"]
    finally:
        stop_process(rec)
    x = np.fromfile(heard, "<i2").astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(x) > 0.1)
    assert len(loud) > RATE, f"the voice did not reach the monitor output ({len(loud)} loud samples); {ear}"
    seg = x[loud[0] + 4800:loud[-1] - 4800]
    assert tone_frequency(seg, RATE) == pytest.approx(700, abs=1.0)
    print(f"\nIN-EAR latency capture->output p50 {ear['latency_ms_p50']} ms, max {ear['latency_ms_max']} ms")
    assert ear["open"] and ear["errors"] == 0 and ear["latency_ms_p50"] is not None
    assert ear["latency_ms_p50"] <= 250, ear  # goal 60 ms (BENCHMARKS.md); margin for a loaded 2-core machine
    errors = [e for e in events if e["name"] == "audio_out_error"]
    assert errors and errors[0]["data"]["code"] == 1320, events
    assert gone["restarts"] == 0 and gone["state"] == "running", gone
    assert push["restarts"] == 0 and push["metrics"]["actor"]["state"] == "connected", push


def test_camera_mic_music_topology_pushes_video_and_the_mixed_audio(
        engine_runner: Callable[..., Engine], rtmp_server: RtmpServer, pulse_server: PulseServer,
        tmp_path: Path) -> None:
    """topologies/camera_mic_music.yaml as it ships (the lavfi camera, small for the test): nginx relays one
    H.264 and one AAC stream, and the music (numbered beeps) is in the audio."""
    beeps = tmp_path / "beeps.wav"
    write_beeps(beeps, 6)
    url = rtmp_server.url(stream="full")
    flv = tmp_path / "full.flv"
    eng = engine_runner("topologies/camera_mic_music.yaml", "--duration", "9", "--set", "cam.width=320",
                        "--set", "cam.height=240", "--set", "music.loop=false",
                        env={"PUSH_URL": url, "MIC_DEVICE": "pulse:mic.monitor", "MUSIC": str(beeps),
                             **pulse_server.env()})
    eng.wait_running()
    wait_for(lambda: eng.node("push")["metrics"].get("actor", {}).get("state") == "connected", 20, "connected")
    recorder = start_recorder(url, flv)
    try:
        assert eng.wait(40) == 0, eng.log
        recorder.wait(30)
    finally:
        stop_process(recorder)
    streams = ffprobe_json(flv, "-show_streams")["streams"]
    assert sorted((s["codec_type"], s["codec_name"]) for s in streams) == [("audio", "aac"), ("video", "h264")]
    heard = [i for _, i in beeps_heard(decode_audio(flv, RATE, 2)[:, 0], RATE, 6)]
    assert len(heard) >= 3 and heard == sorted(set(heard)), heard  # the music, in order, none twice


def test_lip_sync_through_the_mixer_on_what_nginx_relays(tmp_path: Path) -> None:
    """A beep at every whole second of engine time (tone -> mixer -> AAC) against the stamped picture of the
    same instant (test_pattern -> H.264), both through the sender and nginx-rtmp (tools/lipsync.py; its
    5-minute run is quoted in docs/audio.md): |offset| <= 45 ms and steady.  The sender shifts audio 40 ms
    later on purpose (`audio_shift_ms`), so that is where it sits."""
    rows = lipsync_run(6.0, tmp_path)
    assert len(rows) >= 4, rows
    offsets = [r["offset_ms"] for r in rows]
    assert all(abs(o) <= 45.0 for o in offsets), offsets
    assert max(offsets) - min(offsets) <= 10.0, offsets  # steady: no drift between the tracks
    assert [r["engine_s"] for r in rows] == list(range(rows[0]["engine_s"], rows[0]["engine_s"] + len(rows)))
