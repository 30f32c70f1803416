"""Benchmark `audio`: the whole audio path against a tone -> AAC chain, and its delays, in one run.

A private PulseAudio (null sinks `mic` and `monitor`, started and stopped here by PID) gives a real
microphone; a tone is played into `mic` for the whole run.  Two engines push audio-only AAC to nginx-rtmp:

- full path: `microphone (mic.monitor) -> denoise -> mixer <- music (a WAV file, looping)`, `mixer ->
  audio_encoder -> rtmp_sender`, plus `audio_out` playing the voice to `monitor` (in-ear monitoring);
- baseline: `tone -> audio_encoder -> rtmp_sender`.

Each runs warm for a few seconds, then its processes' CPU is sampled for the same window (full: 60 s,
the drift check's length; quick: 4 s, and without the baseline engine, to keep the CI smoke run short).
Reported: CPU per node and in all (% of one core), the microphone's drift against the engine clock at
the end of the window (target < 10 ms), the in-ear monitor's capture-to-output latency (goal <= 60 ms),
and RNNoise's own cost and delay measured offline on the same frames (`Denoiser` on speech-like noise:
CPU per second of audio, target <= 5 % of a core; the delay from cross-correlating input and output,
target <= 20 ms).  Without pulseaudio it is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

from tools.rtmp_server import RtmpServer

from ._common import Result, Settings, Spread, Table, Target, fmt_pct, fmt_s
from ._engine import BenchEngine
from ._procs import TreeSampler

NAME = "audio"
RATE = 48000


class _Pulse:
    """A private PulseAudio with null sinks `mic` and `monitor` (the same setup as tests/pulse.py)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(folder), "HOME": str(folder)}
        sink = f"rate={RATE} channels=2"
        self.proc = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no", "--disallow-exit",
             "--load=module-native-protocol-unix auth-anonymous=1", f"--load=module-null-sink sink_name=mic {sink}",
             f"--load=module-null-sink sink_name=monitor {sink}"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.env = {"PULSE_SERVER": f"unix:{folder / 'pulse' / 'native'}", "XDG_RUNTIME_DIR": str(folder),
                    "PULSE_CLIENTCONFIG": "/dev/null"}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            out = subprocess.run(["pactl", "list", "short", "sources"], env={**os.environ, **self.env},
                                 capture_output=True, text=True, timeout=10, check=False)
            if "mic.monitor" in out.stdout:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("pulseaudio did not start")

    def play_tone(self, seconds: float, freq: float = 700.0) -> subprocess.Popen[bytes]:
        n = round(seconds * RATE)
        pcm = (0.3 * np.sin(2 * np.pi * freq * np.arange(n) / RATE) * 32767).astype("<i2")
        proc = subprocess.Popen(["paplay", "--device=mic", "--raw", f"--rate={RATE}", "--channels=1",
                                 "--format=s16le", "--latency-msec=500"], env={**os.environ, **self.env},
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert proc.stdin is not None
        proc.stdin.write(pcm.tobytes())
        proc.stdin.close()
        return proc

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _nodes(url: str, music: Path) -> list[dict[str, Any]]:
    return [
        {"id": "mic", "kind": "microphone", "options": {"device": "pulse:mic.monitor", "rate": RATE, "channels": 1}},
        {"id": "dn", "kind": "denoise", "inputs": {"in": "mic"}},
        {"id": "music", "kind": "music", "options": {"path": str(music), "loop": True}},
        {"id": "mix", "kind": "mixer", "inputs": {"in_voice": "dn", "in_music": "music"},
         "options": {"rate": RATE, "channels": 2, "pads": {"in_music": {"volume": 30}}}},
        {"id": "ear", "kind": "audio_out", "inputs": {"in": "dn"}, "options": {"device": "pulse:monitor"}},
        {"id": "aenc", "kind": "audio_encoder", "inputs": {"in": "mix"}, "options": {"bitrate_kbps": 128}},
        {"id": "push", "kind": "rtmp_sender", "inputs": {"audio": "aenc"}, "options": {"url": url}},
    ]


def _baseline(url: str) -> list[dict[str, Any]]:
    return [
        {"id": "tone", "kind": "tone", "options": {"freq_hz": 440, "rate": RATE, "channels": 2}},
        {"id": "aenc", "kind": "audio_encoder", "inputs": {"in": "tone"}, "options": {"bitrate_kbps": 128}},
        {"id": "push", "kind": "rtmp_sender", "inputs": {"audio": "aenc"}, "options": {"url": url}},
    ]


def _write_music(path: Path, seconds: float = 5.0) -> None:
    t = np.arange(round(seconds * RATE)) / RATE
    x = 0.3 * (np.sin(2 * np.pi * 330 * t) + 0.5 * np.sin(2 * np.pi * 495 * t))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((x * 32767).astype("<i2").tobytes())


def _measure(nodes: list[dict[str, Any]], settings: Settings, env: dict[str, str], warm_s: float,
             window_s: float) -> dict[str, Any]:
    topo = {"version": 1, "name": "bench_audio", "nodes": nodes}
    with BenchEngine.start(topo, settings.workdir, env=env) as eng:
        eng.wait_running()
        deadline = time.monotonic() + warm_s
        while time.monotonic() < deadline:
            eng.check_alive()
            time.sleep(0.1)
        # the microphone's source starts lazily (PulseAudio, ~2 s): the window starts once the mixer has
        # had the voice for a while, so the counters it starts from (published once a second) are past that
        voice_since: float | None = None
        while "mix" in {n["id"] for n in nodes} and time.monotonic() < deadline + 20:
            mix = next(n for n in eng.ps()["nodes"] if n["id"] == "mix")["metrics"].get("actor") or {}
            voice = (mix.get("inputs") or {}).get("in_voice") or {}
            if voice.get("frames_in") and not voice.get("stalled", True):
                voice_since = voice_since or time.monotonic()
                if time.monotonic() - voice_since > 1.2:
                    break
            else:
                voice_since = None
            eng.check_alive()
            time.sleep(0.1)
        pids = eng.node_pids()
        before = {n["id"]: n["metrics"].get("actor") or {} for n in eng.ps()["nodes"]}
        sampler = TreeSampler([eng.pid], interval_s=0.5)
        sampler.start()
        time.sleep(window_s)
        sampler.stop()
        eng.check_alive()
        st = eng.ps()
        metrics = {n["id"]: n["metrics"].get("actor") or {} for n in st["nodes"]}
        restarts = {n["id"]: n["restarts"] for n in st["nodes"]}
        by_pid = sampler.cpu_by_pid()
        eng.stop()
    return {"cpu_s": sampler.cpu_s, "wall_s": sampler.wall_s,
            "per_node_cpu_s": {nid: by_pid.get(pid, 0.0) for nid, pid in pids.items()},
            "metrics": metrics, "metrics_before": before, "restarts": restarts}


def rnnoise_cost(seconds: float) -> tuple[float, float]:
    """RNNoise offline on `seconds` of noisy tone bursts: (CPU s per s of audio, delay in ms)."""
    from mediaengine.actors.denoise import Denoiser

    rng = np.random.default_rng(7)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    voice = 8000 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)  # syllable-like bursts
    x = np.clip(voice + rng.normal(0, 2500, n), -32768, 32767).astype(np.int16).reshape(-1, 1)
    den = Denoiser(RATE, 1)
    c0 = time.process_time()
    y = np.concatenate([den.process(x[i:i + 480]) for i in range(0, n, 480)])[:, 0].astype(np.float64)
    cpu = time.process_time() - c0
    den.close()
    size = 1 << int(np.ceil(np.log2(len(y) + n)))
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(voice, size)), size)
    lag = int(np.argmax(corr[:4800]))
    return cpu / seconds, lag * 1000 / RATE


def run(settings: Settings) -> Result:
    res = Result(NAME)
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        res.skipped = "needs pulseaudio and pulseaudio-utils (scripts/bootstrap.sh)"
        return res
    window = settings.secs(60.0, 4.0)
    warm = settings.secs(4.0, 2.0)
    work = Path(settings.workdir)
    music = work / "bench-music.wav"
    _write_music(music)
    pulse = _Pulse(work / "pa")
    server = RtmpServer(work / "rtmp-audio")
    player: subprocess.Popen[bytes] | None = None
    try:
        server.start()
        player = pulse.play_tone(warm + window + 30)
        full = _measure(_nodes(server.url(stream="audio-full"), music), settings, pulse.env, warm, window)
        # the baseline is a second engine (~20 s on 2 cores): the full run only, the CI smoke run skips it
        base = None if settings.quick else _measure(_baseline(server.url(stream="audio-base")), settings, {},
                                                    warm, window)
    finally:
        if player is not None and player.poll() is None:
            player.kill()
            player.wait()
        server.stop()
        pulse.stop()
    rn_cpu, rn_delay = rnnoise_cost(settings.secs(20.0, 2.0))

    table = Table(["chain", "CPU s", "CPU % of one core"])
    for label, r in (("microphone + denoise + music + mixer + audio_out + AAC + push", full),
                     ("tone + AAC + push", base)):
        if r is None:
            table.add(label, "(full run only)", "")
            continue
        table.add(label, fmt_s(r["cpu_s"]), fmt_pct(100 * r["cpu_s"] / r["wall_s"]))
    res.tables.append((f"{window:g} s window after {warm:g} s warm-up, whole engine (supervisor included)", table))
    split = Table(["node", "CPU % of one core (full path)"])
    for nid, cpu in full["per_node_cpu_s"].items():
        split.add(nid, fmt_pct(100 * cpu / full["wall_s"]))
    res.tables.append(("per node", split))

    mic = full["metrics"].get("mic", {})
    ear = full["metrics"].get("ear", {})
    drift = abs(float(mic.get("drift_ms", float("nan"))))
    # dropouts: windows the mixer mixed without the voice while the tone played into the microphone
    voice_before = full["metrics_before"].get("mix", {}).get("inputs", {}).get("in_voice", {})
    voice_after = full["metrics"].get("mix", {}).get("inputs", {}).get("in_voice", {})
    dropouts = float(voice_after.get("silent_frames", float("nan")) - voice_before.get("silent_frames", 0))
    late = voice_after.get("late_samples", 0) - voice_before.get("late_samples", 0)
    dn_cpu = 100 * full["per_node_cpu_s"].get("dn", float("nan")) / full["wall_s"]
    delays = Table(["what", "value"])
    delays.add(f"microphone drift vs engine clock after {warm + window:g} s", f"{drift:.2f} ms")
    delays.add("voice windows the mixer had to mix without the microphone (dropouts) / late samples",
               f"{dropouts:.0f} / {late}")
    delays.add("microphone corrections (dropped / repeated samples)",
               f"{mic.get('dropped_samples')} / {mic.get('repeated_samples')}")
    delays.add("in-ear capture -> output latency p50 / max", f"{ear.get('latency_ms_p50')} / "
               f"{ear.get('latency_ms_max')} ms")
    delays.add("RNNoise offline: CPU per s of audio / delay", f"{fmt_pct(100 * rn_cpu)} / {rn_delay:.1f} ms")
    delays.add("denoise node in the engine (CPU of one core)", fmt_pct(dn_cpu))
    delays.add("restarts during the window", str(sum(full["restarts"].values())))
    res.tables.append(("delays and drift", delays))
    ear_p50 = float(ear.get("latency_ms_p50") or float("nan"))
    res.targets = [
        Target("microphone drift after the window (ms)", drift, "<=", 10.0, f"{drift:.2f} ms"),
        Target("microphone dropouts in the window (10 ms frames)", dropouts, "<=", 0.0, f"{dropouts:.0f}"),
        Target("RNNoise CPU (% of one core)", 100 * rn_cpu, "<=", 5.0, fmt_pct(100 * rn_cpu)),
        Target("RNNoise added delay (ms)", rn_delay, "<=", 20.0, f"{rn_delay:.1f} ms"),
        Target("in-ear latency p50 (ms)", ear_p50, "<=", 60.0, f"{ear_p50:.1f} ms"),
    ]
    res.data = {"full": full, "baseline": base, "rnnoise_cpu_per_s": rn_cpu, "rnnoise_delay_ms": rn_delay}
    vs = ""
    if base is not None and base["cpu_s"]:
        ratio = Spread.of([full["cpu_s"] / base["cpu_s"]]).median
        vs = f" vs tone->AAC {fmt_pct(100 * base['cpu_s'] / base['wall_s'])} ({ratio:.1f}x)"
    res.headline = (f"full audio path {fmt_pct(100 * full['cpu_s'] / full['wall_s'])} of a core{vs}; "
                    f"mic drift {drift:.2f} ms; RNNoise {fmt_pct(100 * rn_cpu)}, {rn_delay:.0f} ms; "
                    f"in-ear {ear_p50:.0f} ms")
    return res
