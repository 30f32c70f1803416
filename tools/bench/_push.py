"""The push topologies the RTMP benchmarks run, and the settings the ffmpeg comparison mirrors.

The benchmarks build their graphs from the shipped kinds, taking encoder and sender options from
`topologies/push_rtmp.yaml` (so they measure what users run) but fixing the picture at 720p30:

    src (test_pattern 1280x720@30) [-> filt] -> venc (video_encoder) -> push (rtmp_sender)
    tone (tone)                              -> aenc (audio_encoder) ----^

`with_filter` inserts the 4th actor of the chain, `bench_overlay`: the real `overlay` with the
shipped topology's overlay options (its caption), reporting its first frame out (see `_kinds.py`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from ._engine import ROOT
from ._feeder import PushSpec

PUSH_TOPOLOGY = ROOT / "topologies" / "push_rtmp.yaml"
SENDER = "rtmp_sender"
WIDTH, HEIGHT, FPS = 1280, 720, 30.0


def shipped_push_topology() -> dict[str, Any]:
    data = yaml.safe_load(PUSH_TOPOLOGY.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{PUSH_TOPOLOGY}: not a mapping")
    return data


def _nodes_of(topo: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [n for n in topo.get("nodes", []) if isinstance(n, dict) and n.get("kind") == kind]


def _options(topo: dict[str, Any], kind: str) -> dict[str, Any]:
    nodes = _nodes_of(topo, kind)
    return dict(nodes[0].get("options") or {}) if nodes else {}


def set_sender_url(topo: dict[str, Any], url: str) -> dict[str, Any]:
    """A copy of `topo` whose rtmp_sender nodes push to `url` (replaces `${VAR}` URLs too)."""
    out = yaml.safe_load(yaml.safe_dump(topo))
    for node in _nodes_of(out, SENDER):
        node["options"] = {**(node.get("options") or {}), "url": url}
    return dict(out)


def _sender_pads() -> tuple[str, str]:
    """The sender's video and audio input pads, read from its class (so renames do not break us)."""
    from mediaengine.topology.registry import get_kind

    cls = get_kind(SENDER)
    video = audio = ""
    for pad, port in cls.inputs.items():
        codecs = set(port.codecs)
        if "h264" in codecs or (not video and "video" in pad):
            video = pad
        elif "aac" in codecs or (not audio and "audio" in pad):
            audio = pad
    if not video or not audio:
        raise ValueError(f"cannot tell the video and audio pads of {SENDER} apart: {dict(cls.inputs)}")
    return video, audio


def bench_push_topology(url: str, *, with_filter: bool, beeps: bool = False) -> dict[str, Any]:
    """The benchmark's 720p30 push graph (see the module docstring); `beeps`: the tone only in beeps
    on the wall clock (`bench_beep`, for audio latency)."""
    shipped = shipped_push_topology()
    tone = {"freq_hz": 440.0, **_options(shipped, "tone")}
    venc = _options(shipped, "video_encoder")
    aenc = _options(shipped, "audio_encoder")
    sender = {**_options(shipped, SENDER), "url": url}
    pattern = _options(shipped, "test_pattern")
    src = {"width": WIDTH, "height": HEIGHT, "fps": FPS, **{k: v for k, v in pattern.items()
                                                             if k in ("pattern", "text")}}
    vpad, apad = _sender_pads()
    nodes: list[dict[str, Any]] = [
        {"id": "src", "kind": "test_pattern", "options": src},
        {"id": "tone", "kind": "bench_beep" if beeps else "tone", "options": tone},
    ]
    video_in = "src"
    if with_filter:
        overlay = _options(shipped, "overlay")
        nodes.append({"id": "filt", "kind": "bench_overlay", "inputs": {"in": "src"}, "options": overlay})
        video_in = "filt"
    nodes += [
        {"id": "venc", "kind": "video_encoder", "inputs": {"in": video_in}, "options": venc},
        {"id": "aenc", "kind": "audio_encoder", "inputs": {"in": "tone"}, "options": aenc},
        {"id": "push", "kind": SENDER, "inputs": {vpad: "venc", apad: "aenc"}, "options": sender},
    ]
    topo: dict[str, Any] = {"version": 1, "name": "bench-push", "nodes": nodes}
    if "supervisor" in shipped:
        topo["supervisor"] = shipped["supervisor"]
    return topo


def push_spec(topo: dict[str, Any]) -> PushSpec:
    """The ffmpeg comparison's settings: the same picture, tone and encoder options as `topo`."""
    from mediaengine.actors.audio_encoder import AudioEncoderOptions
    from mediaengine.actors.test_pattern import TestPatternOptions
    from mediaengine.actors.tone import ToneOptions
    from mediaengine.actors.video_encoder import VideoEncoderOptions

    tp = TestPatternOptions(**_options(topo, "test_pattern"))
    tn = ToneOptions(**_options(topo, "tone"))
    ve = VideoEncoderOptions(**_options(topo, "video_encoder"))
    ae = AudioEncoderOptions(**_options(topo, "audio_encoder"))
    offset = _options(topo, SENDER).get("audio_offset_ms")
    if offset is None:
        offset = _sender_default("audio_offset_ms", 0.0)
    return PushSpec(width=tp.width, height=tp.height, fps=tp.fps, pattern=tp.pattern, text=tp.text,
                    freq_hz=tn.freq_hz, rate=tn.rate, channels=tn.channels, samples_per_frame=tn.samples_per_frame,
                    volume=tn.volume, v_bitrate_kbps=ve.bitrate_kbps, preset=ve.preset, tune=ve.tune, gop_s=ve.gop_s,
                    bframes=ve.bframes, threads=ve.threads, profile=ve.profile, vbv_buffer_s=ve.vbv_buffer_s,
                    a_bitrate_kbps=ae.bitrate_kbps, audio_offset_ms=float(offset))


def _sender_default(option: str, fallback: float) -> float:
    """A default of the rtmp_sender's options (fallback when the kind is not there)."""
    from mediaengine.sdk.errors import EngineError
    from mediaengine.topology.registry import get_kind

    try:
        fields = {f.name: f for f in dataclasses.fields(get_kind(SENDER).Options)}
    except EngineError:
        return fallback
    f = fields.get(option)
    return float(f.default) if f is not None and isinstance(f.default, int | float) else fallback


def describe(spec: PushSpec) -> str:
    d = dataclasses.asdict(spec)
    return (f"{d['width']}x{d['height']}@{d['fps']:g} libx264 {d['preset']}/{d['tune'] or '-'} "
            f"{d['v_bitrate_kbps']} kbit/s GOP {d['gop_s']:g} s, AAC {d['a_bitrate_kbps']} kbit/s "
            f"{d['rate']} Hz x{d['channels']}, audio offset {d['audio_offset_ms']:g} ms")


def write_topology(topo: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(topo, sort_keys=False))
    return path
