"""The rate controller inside the sender: samples the link every 250 ms, runs `rate.RateController`
and turns its decisions into actions: `Configure` of the encoder node (`bitrate_kbps`, `max_fps`,
`resolution`), the probe filler the writer adds, and events.  See docs/architecture.md "Adaptive bit
rate" and "Dynamic resolution".
"""

from __future__ import annotations

from typing import Any

from mediaengine.sdk.actor import Action, Configure, Event
from mediaengine.sdk.resolution import SOURCE, nearest_preset, scaled_size

from .options import RtmpSenderOptions
from .publisher import Link
from .rate import (
    RESOLUTION_DOWN_KBPS,
    Decision,
    Ladder,
    ModeRow,
    ObsController,
    RateController,
    Sample,
    Tuning,
    mode_row,
)

PERIOD_NS = 250_000_000  # one sample
RESYNC_NS = 2_000_000_000  # a decision needs this long to show in the encoder's keyframe params


def custom_row(o: RtmpSenderOptions) -> ModeRow:
    return ModeRow(o.abr_target_kbps, o.abr_min_kbps, o.abr_initial_kbps, o.abr_min_fps > 0)


class Adaptive:
    """One controller for one sender; created at the first video params (size and fps known)."""

    def __init__(self, options: RtmpSenderOptions, params: dict[str, Any], tuning: Tuning | None = None) -> None:
        self.o = options
        self.encoder = options.abr_encoder
        self.height = int(params.get("height") or 720)
        self.width = int(params.get("width") or self.height * 16 // 9)  # the source's (the encoder starts at it)
        fps = float(params.get("fps") or 30.0)
        self.fps = fps
        self.obs: ObsController | None = None
        if options.abr == "obs":  # the benchmark's reference: OBS's algorithm from abr_target_kbps
            self.obs = ObsController(options.abr_target_kbps)
            row = custom_row(options)
        else:
            row = mode_row(options.abr, self.height, custom_row(options) if options.abr == "custom" else None)
        ladder = Ladder(options.abr, nearest_preset(self.height)) if options.abr in RESOLUTION_DOWN_KBPS else None
        self.controller = RateController(row, fps=fps, min_fps=options.abr_min_fps or fps, tuning=tuning,
                                         ladder=ladder)
        self.next_ns = 0
        self.last_configure_ns = 0
        self.keyframes_asked = 0  # the encoder's `keyframe_request`, counted up for each skip

    def start(self) -> list[Action]:
        """The encoder starts at the mode's initial bit rate."""
        c = self.controller
        if self.obs is not None:
            return [Configure(self.encoder, {"bitrate_kbps": self.obs.bitrate_kbps}),
                    Event("abr_started", {"mode": "obs", "encoder": self.encoder, "target_kbps": self.obs.original})]
        return [Configure(self.encoder, {"bitrate_kbps": c.bitrate_kbps}),
                Event("abr_started", {"mode": self.o.abr, "encoder": self.encoder, "target_kbps": c.row.target_kbps,
                                      "min_kbps": c.row.min_kbps, "initial_kbps": c.row.initial_kbps})]

    def check_encoder(self, params: dict[str, Any], now_ns: int) -> list[Action]:
        """A keyframe's params carry the encoder's bit rate: a restarted encoder comes back at its
        topology rate, so tell it the controller's again (at most once per RESYNC_NS)."""
        want = self.obs.bitrate_kbps if self.obs is not None else self.controller.bitrate_kbps
        have = int(params.get("bit_rate") or 0) // 1000
        if not have or have == want or now_ns - self.last_configure_ns < RESYNC_NS:
            return []
        self.last_configure_ns = now_ns
        return [Configure(self.encoder, {"bitrate_kbps": want}),
                Event("encoder_resync", {"encoder_kbps": have, "bitrate_kbps": want})]

    def options_changed(self, options: RtmpSenderOptions) -> list[Action]:
        """custom targets changed live."""
        self.o = options
        if options.abr != "custom":
            return []
        d = self.controller.set_row(custom_row(options))
        return self._actions(d.bitrate_kbps, None, None, d.events)

    def tick(self, now_ns: int, link: Link) -> list[Action]:
        c = self.controller
        if now_ns < self.next_ns:
            return []
        self.next_ns = now_ns + PERIOD_NS
        snap = link.snapshot()
        if snap["state"] != "connected":
            link.filler_kbps = 0
            return []
        rates = snap["bitrate_kbps"]
        video_kbps = rates["video"]  # media only (the filler is counted apart)
        # the audio the link has to carry: what the encoder hands over, not what got out lately (under
        # congestion audio waits in the backlog, and its sent rate dips by a third: the room left for
        # video would read that much too large)
        audio_kbps = snap["input_kbps"]["audio"]
        sample = Sample(now_ns, snap["acked_bytes"], snap["queued_ms"], audio_kbps, snap["bytes_sent"], video_kbps,
                        snap["backlog_ms"])
        if self.obs is not None:
            d = self.obs.step(sample)
            if d.bitrate_kbps is not None:
                d.events.append(("bitrate_changed", {"bitrate_kbps": d.bitrate_kbps, "reason": "obs",
                                                     "queued_ms": round(sample.queued_ms, 1)}))
        else:
            d = c.step(sample)
        link.filler_kbps = d.probe_kbps
        if self.obs is None:  # the socket holds at most `abr_in_flight_ms` of this beyond a round trip
            link.plan_kbps = c.bitrate_kbps + sample.other_kbps + d.probe_kbps
        actions = self._actions(d.bitrate_kbps, d.max_fps, d.resolution, d.events)
        if d.skip_video:
            actions += self._skip(link, sample)
        if self.o.abr_trace:
            actions.append(Event("abr_sample", self._trace(sample, d, snap)))
        return actions

    def _skip(self, link: Link, s: Sample) -> list[Action]:
        """Drop the queued video and ask the encoder for a keyframe (see rate.py "Skip")."""
        dropped = link.drop_stale_video()
        self.keyframes_asked += 1
        return [Configure(self.encoder, {"keyframe_request": self.keyframes_asked}),
                Event("video_skipped", {"packets": dropped, "queued_ms": round(s.queued_ms, 1)})]

    def _trace(self, s: Sample, d: Decision, snap: dict[str, Any]) -> dict[str, Any]:
        """What one sample measured and what the controller made of it (`abr_trace`)."""
        c = self.controller
        return {"queued_ms": round(s.queued_ms, 1), "backlog_ms": snap["backlog_ms"],
                "backlog_bytes": snap["backlog_bytes"], "unsent_bytes": snap["unsent_bytes"],
                "in_flight_bytes": s.sent_bytes - s.acked_bytes, "input_video_kbps": snap["input_kbps"]["video"],
                "link_kbps": round(c.link_kbps, 1), "video_kbps": round(s.video_kbps, 1),
                "audio_kbps": round(s.other_kbps, 1), "probe_kbps": d.probe_kbps,
                "bitrate_kbps": self.obs.bitrate_kbps if self.obs is not None else c.bitrate_kbps,
                "probing": c.probe_start_ns is not None, "draining": c.draining, "grace": c.grace, "poor": c.poor}

    def _actions(self, bitrate: int | None, max_fps: float | None, preset: str | None,
                 events: list[tuple[str, dict[str, Any]]]) -> list[Action]:
        out: list[Action] = []
        if preset is not None:  # first: the bit rate that follows is the new size's
            out.append(Configure(self.encoder, {"resolution": self._encoder_resolution(preset)}))
        if max_fps is not None:  # before the bit rate: a raise that reopens the encoder opens it at this rate
            out.append(Configure(self.encoder, {"max_fps": max_fps}))
        if bitrate is not None:
            self.last_configure_ns = self.next_ns - PERIOD_NS
            out.append(Configure(self.encoder, {"bitrate_kbps": bitrate}))
        for name, data in events:
            if name == "resolution_changed":  # the size the encoder will push, for the app
                width, height = scaled_size(self.width, self.height, self._encoder_resolution(str(data["resolution"])))
                data = {**data, "width": width, "height": height}
            out.append(Event(name, data))
        switcher = self.o.abr_poor_switcher
        if switcher:  # the "weak network" picture, while the episode lasts
            out += [Configure(switcher, {"network_poor": name == "network_poor"}) for name, _ in events
                    if name in ("network_poor", "network_recovered")]
        return out

    def _encoder_resolution(self, preset: str) -> str:
        """The encoder's `resolution` for a preset: the top of the ladder is the source's own size."""
        ladder = self.controller.ladder
        return SOURCE if ladder is not None and preset == ladder.presets[0] else preset
