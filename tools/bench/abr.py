"""Benchmark `abr`: adaptive bit rate on a shaped link, this engine's controller vs an OBS-style one vs a
fixed bit rate, each on the same link profile in one run.

Each controller pushes a noise test pattern (640x360, 30 fps) and a tone through a veth pair into
nginx-rtmp in its own network namespace (`tools.netshape`); `tc tbf` on the engine's end follows the
profile (4 Mbit/s -> 1 -> 0.3 -> 4 by default); `mediaengine play --json` inside the server's namespace
records stalls and glass-to-glass latency.  The OBS-style controller is `rtmp_sender`'s `abr: obs`
(`rate.ObsController`: more than 200 ms queued cuts to the throughput of the last 2 s, rounded down to
100 kbit/s, then +10% of the original bit rate every 4 s while the queue stays clear); fixed is
`abr: off` at the target.

Figures per controller: seconds stalled at the puller, the longest stall, worst latency (the highest
per-second p95), delivered bit rate as a share of the link, time from each drop to a target under the
link, time after the rise to 80% of min(link, target), direction changes of the bit rate, audio
packets dropped.  `run_profile` is also what the shaped-link CI test runs (shorter profile).
Needs root (network namespaces), nginx with the RTMP module; skipped otherwise.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediaengine import Engine

from tools import netshape
from tools.rtmp_server import RTMP_MODULE, RtmpServer, free_port

from ._common import Result, Settings, Table, Target, fmt_num
from .abr_sim import direction_changes

NAME = "abr"
AUDIO_KBPS = 64
TARGET_KBPS = 2500
MIN_KBPS = 150
#: (seconds from the start of streaming, link kbit/s)
PROFILE: tuple[tuple[float, int], ...] = ((0, 4000), (15, 1000), (35, 300), (55, 4000))
PROFILE_S = 80.0
QUICK_PROFILE: tuple[tuple[float, int], ...] = ((0, 4000), (8, 1000), (16, 300), (24, 4000))
QUICK_S = 42.0  # the CI test's profile: 18 s after the rise (recovery takes ~7 s, `network_recovered` 2 s more)
#: `--quick` (CI's bench smoke run, under 3 minutes for every benchmark): a shorter profile, engine and OBS-style
SMOKE_PROFILE: tuple[tuple[float, int], ...] = ((0, 4000), (5, 1000), (10, 300), (14, 4000))
SMOKE_S = 24.0


def topology(url: str, controller: str, *, width: int = 640, height: int = 360, fps: float = 30) -> dict[str, Any]:
    """The pushed graph; `controller` is `engine` (custom mode at TARGET_KBPS), `obs`, `fixed`, or
    `fluency` (fluency_first's tables, which also step the resolution)."""
    push: dict[str, Any] = {"url": url, "abr_encoder": "venc", "abr_target_kbps": TARGET_KBPS, "abr_min_kbps": MIN_KBPS,
                            "abr_initial_kbps": 1500, "abr_min_fps": 8, "abr_trace": True}
    push["abr"] = {"engine": "custom", "obs": "obs", "fixed": "off", "fluency": "fluency_first"}[controller]
    return {"version": 1, "name": f"abr_{controller}", "nodes": [
        {"id": "src", "kind": "test_pattern", "options": {"width": width, "height": height, "fps": fps,
                                                          "pattern": "noise"}},
        {"id": "tone", "kind": "tone", "options": {"rate": 48000, "channels": 1}},
        {"id": "venc", "kind": "video_encoder", "inputs": {"in": "src"},
         "options": {"bitrate_kbps": TARGET_KBPS if controller == "fixed" else 1500, "gop_s": 2,
                     "preset": "ultrafast"}},
        {"id": "aenc", "kind": "audio_encoder", "inputs": {"in": "tone"}, "options": {"bitrate_kbps": AUDIO_KBPS}},
        {"id": "push", "kind": "rtmp_sender", "inputs": {"video": "venc", "audio": "aenc"}, "options": push},
    ]}


@dataclass
class Run:
    """What one controller did on the profile (times in s from the start of streaming)."""

    controller: str
    changes: list[tuple[float, int]]  # link rate changes
    bitrate: list[tuple[float, int]] = field(default_factory=list)  # the bit rate the encoder applied, over time
    events: list[dict[str, Any]] = field(default_factory=list)  # push/venc events, t relative
    stall_s: float = math.nan
    longest_stall_s: float = 0.0
    worst_latency_ms: float = math.nan
    delivered_share: float = math.nan
    audio_dropped: int = -1
    video_dropped: int = -1
    frames: int = 0
    decode_errors: int = 0
    stalls: list[tuple[float, float]] = field(default_factory=list)  # (start s, duration s) at the puller
    samples: list[dict[str, Any]] = field(default_factory=list)  # the sender's `abr_sample` trace, t relative

    def link_at(self, t: float) -> int:
        rate = self.changes[0][1]
        for start, kbps in self.changes:
            if t >= start:
                rate = kbps
        return rate

    def target_at(self, t: float) -> int:
        rate = self.bitrate[0][1] if self.bitrate else 0
        for start, kbps in self.bitrate:
            if t >= start:
                rate = kbps
        return rate

    def drop_reactions(self) -> list[float]:
        """For each drop of the link: seconds until the target + audio was under it (NaN: never)."""
        out = []
        for i, (t0, kbps) in enumerate(self.changes[1:], 1):
            if kbps >= self.changes[i - 1][1]:
                continue
            end = self.changes[i + 1][0] if i + 1 < len(self.changes) else math.inf
            times = [t0] + [t for t, _ in self.bitrate if t0 <= t < end]
            ok = [t for t in times if self.target_at(t) + AUDIO_KBPS < kbps]
            out.append(ok[0] - t0 if ok else math.nan)
        return out

    def recovery(self) -> float:
        """Seconds after the last rise until the target reached 80% of min(link - audio, target)."""
        rises = [(t, k) for i, (t, k) in enumerate(self.changes[1:], 1) if k > self.changes[i - 1][1]]
        if not rises:
            return math.nan
        t0, kbps = rises[-1]
        goal = 0.8 * min(kbps - AUDIO_KBPS, TARGET_KBPS)
        times = [t0] + [t for t, _ in self.bitrate if t >= t0]
        ok = [t for t in times if self.target_at(t) >= goal]
        return ok[0] - t0 if ok else math.nan

    def direction_changes(self, since_s: float = -math.inf) -> int:
        """How often the applied bit rate turned from rising to falling or back (from `since_s` on)."""
        return direction_changes([float(k) for t, k in self.bitrate if t >= since_s])

    def events_named(self, name: str, node: str = "push") -> list[dict[str, Any]]:
        return [e for e in self.events if e["name"] == name and e["node"] == node]

    def samples_near(self, t: float, before_s: float = 2.0, after_s: float = 0.5) -> list[dict[str, Any]]:
        """The controller's trace around `t` (what decided an event there)."""
        return [x for x in self.samples if t - before_s <= x["t"] <= t + after_s]

    def to_json(self) -> dict[str, Any]:
        return {"controller": self.controller, "link": self.changes, "bitrate": self.bitrate,
                "stall_s": self.stall_s, "longest_stall_s": self.longest_stall_s,
                "worst_latency_ms": self.worst_latency_ms, "delivered_share": self.delivered_share,
                "drop_reactions_s": self.drop_reactions(), "recovery_s": self.recovery(),
                "direction_changes": self.direction_changes(), "audio_dropped": self.audio_dropped,
                "video_dropped": self.video_dropped, "frames": self.frames, "stalls": self.stalls,
                "network_events": [(round(e["t"], 2), e["name"]) for e in self.events
                                   if e["name"].startswith("network_")]}


def unavailable() -> str | None:
    """None when the shaped link and the server can run here, else why not."""
    why = netshape.available()
    if why:
        return why
    if not RTMP_MODULE.exists():
        return "needs nginx with the RTMP module (libnginx-mod-rtmp)"
    return None


def _player(link: netshape.ShapedLink, url: str, duration_s: float,
            out: list[dict[str, Any]]) -> tuple[subprocess.Popen[str], threading.Thread]:
    cmd = [*link.exec_prefix(), sys.executable, "-m", "mediaengine.cli", "play", url, "--json", "--duration",
           f"{duration_s:g}", "--timeout", "15"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return proc, reader


def run_profile(controller: str, profile: tuple[tuple[float, int], ...], duration_s: float, workdir: Path,
                *, width: int = 640, height: int = 360, fps: float = 30) -> Run:
    """Push with `controller` through a link following `profile`; everything it started is stopped."""
    key = f"abr_{controller}_{secrets.token_hex(4)}"
    events: list[dict[str, Any]] = []
    played: list[dict[str, Any]] = []
    with netshape.ShapedLink(profile[0][1], tag=controller[0]) as link:
        server = RtmpServer(workdir / f"rtmp-{controller}", free_port(), host=link.peer_ip, netns=link.netns)
        server.start()
        player: subprocess.Popen[str] | None = None
        reader: threading.Thread | None = None
        try:
            os.environ["ABR_PUSH_URL"] = server.url(stream=key)
            topo = topology("${ABR_PUSH_URL}", controller, width=width, height=height, fps=fps)
            with Engine.start(topo) as eng:
                eng.wait_running()
                eng.subscribe(lambda topic, ev: events.append(ev))
                t_start = time.time()
                player_t0 = time.time() - t_start
                player, reader = _player(link, server.url(stream=key), duration_s + 3, played)
                changes: list[tuple[float, int]] = [(0.0, profile[0][1])]
                for at, kbps in profile[1:]:
                    delay = t_start + at - time.time()
                    if delay > 0:
                        time.sleep(delay)  # the profile's schedule (not a wait for a condition)
                    changes.append((link.set_rate(kbps) - t_start, kbps))
                delay = t_start + duration_s - time.time()
                if delay > 0:
                    time.sleep(delay)
                push = next(n for n in eng.ps()["nodes"] if n["id"] == "push")["metrics"].get("actor", {})
            player.wait(30)
        finally:
            if player is not None:
                if player.poll() is None:
                    player.kill()
                    player.wait(10)
                if reader is not None:
                    reader.join(5)
                if player.stdout is not None:
                    player.stdout.close()
            server.stop()
            os.environ.pop("ABR_PUSH_URL", None)
    run = Run(controller, changes)
    for ev in events:
        if ev["name"] == "abr_sample":
            run.samples.append({"t": round(ev["t"] - t_start, 2), **ev["data"]})
        elif ev["node"] in ("push", "venc"):
            run.events.append({**ev, "t": ev["t"] - t_start})
    started = [e for e in run.events if e["node"] == "venc" and e["name"] == "encoder_started"]
    if started:
        run.bitrate.append((min(0.0, started[0]["t"]), int(started[0]["data"]["bitrate_kbps"])))
    for e in run.events:  # when the encoder applied each bit rate: in place at once, or reopened at a keyframe
        if e["node"] != "venc":
            continue
        data = e["data"]
        in_place = e["name"] == "bitrate_changed" and not data.get("at_keyframe")
        reopened = e["name"] == "encoder_started" and data.get("reopen") and (
            not run.bitrate or run.bitrate[-1][1] != int(data["bitrate_kbps"]))
        if in_place or reopened:
            run.bitrate.append((e["t"], int(data["bitrate_kbps"])))
    # stalls on the engine's clock (the player's clock starts a little later: its start-up is not
    # counted, so these times are early by that much); the stall when the push ends is not one
    stalls = [e for e in played if e.get("type") == "stall"
              and e.get("t", 0.0) - e["duration_ms"] / 1000 + player_t0 < duration_s - 1.5]
    run.longest_stall_s = max((e["duration_ms"] / 1000 for e in stalls), default=0.0)
    run.stalls = [(round(e.get("t", 0.0) - e["duration_ms"] / 1000 + player_t0, 2), e["duration_ms"] / 1000)
                  for e in stalls]
    summary = next((e for e in played if e.get("type") == "summary"), {})
    run.stall_s = sum(d for _, d in run.stalls) if summary else math.nan
    run.frames = summary.get("frames", 0)
    run.decode_errors = summary.get("decode_errors", 0)
    p95 = [e["latency_ms_p95"] for e in played if e.get("type") == "stats" and e.get("latency_ms_p95") is not None]
    run.worst_latency_ms = max(p95, default=math.nan)
    link_kbit = sum(k * (min(duration_s, (changes[i + 1][0] if i + 1 < len(changes) else duration_s)) - t)
                    for i, (t, k) in enumerate(changes))
    run.delivered_share = push.get("acked_bytes", 0) * 8 / 1000 / link_kbit if link_kbit else math.nan
    run.audio_dropped = int(push.get("dropped", {}).get("audio", -1))
    run.video_dropped = int(push.get("dropped", {}).get("video", -1))
    return run


def _fmt(x: float, unit: str = "s") -> str:
    return "never" if math.isnan(x) else f"{x:.2f} {unit}"


def run(settings: Settings) -> Result:
    res = Result(NAME)
    why = unavailable()
    if why:
        res.skipped = why
        return res
    profile, duration = (SMOKE_PROFILE, SMOKE_S) if settings.quick else (PROFILE, PROFILE_S)
    controllers = ("engine", "obs") if settings.quick else ("engine", "obs", "fixed")
    runs = [run_profile(c, profile, duration, Path(settings.workdir)) for c in controllers]
    table = Table(["controller", "stalled", "longest stall", "worst latency p95", "delivered / link",
                   "drop -> under link", "rise -> 80%", "direction changes", "audio dropped"])
    for r in runs:
        table.add(r.controller, _fmt(r.stall_s), _fmt(r.longest_stall_s), _fmt(r.worst_latency_ms, "ms"),
                  fmt_num(r.delivered_share * 100, 0) + " %",
                  ", ".join(_fmt(x) for x in r.drop_reactions()), _fmt(r.recovery()), r.direction_changes(),
                  r.audio_dropped)
    res.tables.append((f"link profile {list(profile)} over {duration:g} s, target {TARGET_KBPS} kbit/s video "
                       f"+ {AUDIO_KBPS} audio", table))
    eng, obs = runs[0], runs[1]
    # OBS-style that never got there: the time it had (the rest of the run after the rise), a lower bound
    obs_recovery = obs.recovery() if not math.isnan(obs.recovery()) else duration - profile[-1][0]
    worst_drop = max(eng.drop_reactions(), default=math.nan)
    obs_drop = max(obs.drop_reactions(), default=math.nan)
    res.targets += [
        Target("engine: stalled s vs OBS-style (<= OBS + 0.5 s)", eng.stall_s, "<=", obs.stall_s + 0.5),
        Target("engine: slowest drop reaction s", worst_drop, "<=", 1.5),
        Target("engine: drop reaction no slower than OBS-style + 0.25 s", worst_drop, "<=",
               (obs_drop if not math.isnan(obs_drop) else math.inf) + 0.25),
        Target("engine: recovery s after the rise", eng.recovery(), "<=", 10.0),
        Target("OBS-style recovery / engine recovery (>= 2x; OBS-style 'never' counts as the rest of the run)",
               obs_recovery / max(eng.recovery(), 0.25), ">=", 2.0),
        Target("engine: longest stall s", eng.longest_stall_s, "<=", 1.0),
        Target("engine: audio packets dropped", float(eng.audio_dropped), "<=", 0.0),
    ]
    res.headline = (f"engine recovers to 80% in {_fmt(eng.recovery())} vs OBS-style {_fmt(obs.recovery())}; "
                    f"drop reaction {_fmt(worst_drop)} vs {_fmt(obs_drop)}; stalled {_fmt(eng.stall_s)} vs "
                    f"{_fmt(obs.stall_s)}" + (f" (fixed {_fmt(runs[2].stall_s)})" if len(runs) > 2 else ""))
    res.data = {"profile": list(profile), "duration_s": duration, "runs": [r.to_json() for r in runs]}
    return res
