"""The rate controller: a state machine fed with the sender's congestion samples that decides the
encoder's bit rate, its frame rate and the filler the sender adds to probe the link.  Pure logic: no
clock, no I/O (part of the rtmp_sender kind; docs/architecture.md "Adaptive bit rate").

Every `period` (250 ms) the sender hands a `Sample`: the bytes the server acknowledged so far, the
media waiting to go out (backlog + unsent socket bytes, in ms) and the bit rate of the other streams
(audio).  `RateController.step(sample)` returns a `Decision`.

- **Cut at once to what the link carries.**  More than `cut_ms` queued while the link carries less
  than what is sent (a keyframe queues for a moment on a link with room) and less than the plan (an
  encoder over its target for a second of hard pictures fills a link that carries the target; the
  queue drains when the encoder is back on it), once media waited at the sample before too (the
  throughput of a period when nothing waited is the sender's rate, not the link's), or more than
  `overflow_ms` queued and growing whatever the link carries: the video bit rate becomes
  `headroom` x the throughput acknowledged over the last `window` minus the audio, at once (one
  sample period), not in fixed steps.  While that queue drains no second cut, unless the measured
  link fell again.
- **Skip what the old link queued.**  A cut with more than `skip_ms` queued also drops the queued
  video (not the audio) and asks the encoder for a keyframe (`skip_video`): what was queued for the
  faster link would reach the viewer a second or more late and freeze the picture while it drains;
  the viewer's picture jumps to the keyframe instead, and the sound never stops.
- **Probe upward without touching the picture.**  Below the target and with a clear queue, the
  controller asks the sender for `probe_kbps` of H.264 filler data (NAL type 12, which decoders
  skip) on top of the video for `probe` (0.5 s).  If the queue stayed clear, the link proved it
  carries bit rate + filler: the bit rate goes up to that level (never further than proved) and
  the next probe starts at once, so the rise is geometric (x `probe_factor` per second).  On
  congestion (more than `cut_ms` queued) the filler stops at
  once and the bit rate is unchanged; the next probe waits `probe_every` and is smaller.  A probe
  ends as soon as `probe_abort_ms` is queued (no cut: only the filler stops); it
  succeeds when the server acknowledged `probe_carried` of the bytes sent meanwhile, and the bit rate
  rises to at most `headroom_up` x what the link carried.  So on a
  steady link the bit rate never turns around because of a probe: it goes down on congestion only.
- **A raise's keyframe is not congestion.**  A raise above the rate the encoder opened with, or a
  step up in size, reopens it: its IDR comes as a burst (up to a third of a second of the new rate)
  that queues for one sample on a link with room.  For `raise_grace` after a raise, queued media is
  congestion only when it was already over `cut_ms` at the sample before and still grew (or is over
  twice `cut_ms`); a real drop in that second is cut one sample later.
- **Frame rate.**  Where the mode's table says so, reaching the bit rate floor lowers the frame rate
  to `min_fps`; it comes back once the bit rate is `fps_restore` x the floor.
- **Resolution** (`fluency_first`; `RESOLUTION_DOWN_KBPS`).  A cut whose measured bit rate is under
  the current preset's threshold steps the picture down, straight to the largest preset whose
  threshold it meets (the link's rate, without the queue's temporary drain), once the measure settled
  (`down_settle`, 0.5 s: the cut's bit rate applies at once, in place; each step costs an IDR), and
  the bit rate follows that preset's row (its lower floor).  Back up one preset at a time, after the bit rate held
  `up_share` (0.8) of the current row's target with a clear queue for `up_hold`; each threshold is
  0.65x the target of the preset below, so the step up lands 1.23x above the step-down point of the
  preset it returns to: hysteresis.  A step up undone by a step down
  within `up_backoff` blocks the next step up for that long (doubling).
- **Network events.**  `network_poor` at the first cut of an episode, `network_recovered` when the bit
  rate is back to `recovered_share` of the target with the queue clear for `recovered_hold`: once
  each per episode, with the figures that decided it.

The modes are data (`MODES`, from the reference SDK's defaults): per resolution, the target, floor
and initial bit rate, and whether the floor lowers the frame rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from mediaengine.sdk.resolution import RESOLUTIONS, nearest_preset

NS = 1_000_000_000
MS = 1_000_000


@dataclass(frozen=True)
class ModeRow:
    """One resolution's bit rates in one mode (kbit/s of video)."""

    target_kbps: int
    min_kbps: int
    initial_kbps: int
    fps_at_floor: bool  # at the floor, lower the frame rate to min_fps


PRESETS = RESOLUTIONS  # (name, height), largest first: mediaengine.sdk.resolution

#: mode -> preset -> row.  resolution_first keeps the picture and spends bit rate on it (the SDK's
#: 720p: 2000/600/1500, 540p: 800/200/800); fluency_first aims at about half that, with a lower
#: floor (720p: 1200/300/1000), and lowers the frame rate at the floor to keep motion flowing.
MODES: dict[str, dict[str, ModeRow]] = {
    "resolution_first": {
        "1080p": ModeRow(3000, 900, 2200, True), "720p": ModeRow(2000, 600, 1500, True),
        "540p": ModeRow(800, 200, 800, True), "480p": ModeRow(700, 180, 600, True),
        "360p": ModeRow(500, 150, 400, True), "240p": ModeRow(300, 100, 250, True),
        "180p": ModeRow(200, 100, 150, True),
    },
    "fluency_first": {
        "1080p": ModeRow(1800, 450, 1400, True), "720p": ModeRow(1200, 300, 1000, True),
        "540p": ModeRow(500, 120, 400, True), "480p": ModeRow(400, 100, 350, True),
        "360p": ModeRow(300, 100, 250, True), "240p": ModeRow(200, 100, 150, True),
        "180p": ModeRow(150, 100, 120, True),
    },
}
MODE_NAMES = ("resolution_first", "fluency_first", "custom")

#: mode -> preset -> step down when a cut measures the video bit rate under this (kbit/s).  Each is 0.65x
#: the target of the preset below, so the step back up (at `up_share` = 0.8 of that preset's target) is
#: 1.23x above it.
#: Only fluency_first changes the picture size (resolution_first keeps it; custom has no table); the
#: lowest preset has no threshold.
RESOLUTION_DOWN_KBPS: dict[str, dict[str, int]] = {
    "fluency_first": {"1080p": 780, "720p": 325, "540p": 260, "480p": 195, "360p": 130, "240p": 100},
}


def preset_for(height: int) -> str:
    """The preset nearest to a frame height (1080p .. 180p)."""
    return nearest_preset(height)


def mode_row(mode: str, height: int, custom: ModeRow | None = None) -> ModeRow:
    """The row that applies: the mode's row for the nearest preset, or `custom` for `custom`."""
    if mode == "custom":
        if custom is None:
            raise ValueError("custom mode needs its own row (target, min, initial)")
        return custom
    return MODES[mode][preset_for(height)]


@dataclass(frozen=True)
class Tuning:
    """The controller's constants (defaults measured on the shaped-link test)."""

    period_ns: int = 250 * MS  # one sample
    window_ns: int = 1 * NS  # throughput window
    recent_ns: int = 500 * MS  # the short window a cut also looks at (the link's rate now)
    cut_ms: float = 300.0  # queued beyond this = congestion: cut ...
    carried_less: float = 0.95  # ... if the link also carries less than this share of what is sent (a
    # keyframe queues for a moment on a link that has room; a link that fell carries less) and of what
    # the controller planned (an encoder running over its target for a second fills a link that carries
    # the target: the queue drains when it is back on it)
    overflow_ms: float = 600.0  # queued beyond this and growing: cut, whatever the link carries
    clear_ms: float = 100.0  # queued under this = the link keeps up
    headroom: float = 0.85  # a cut goes to this share of the measured link (the queue drains)
    probe_ns: int = 500 * MS  # a probe lasts this long
    probe_factor: float = 2.0  # a probe tries this x the bit rate (shrinks after a failed probe)
    min_probe_factor: float = 1.1
    probe_abort_ms: float = 150.0  # queued during a probe: the probe ends (failed), no cut
    probe_carried: float = 0.9  # a probe succeeds if the link acknowledged this share of what was sent
    headroom_up: float = 0.85  # a successful probe raises to at most this share of what the link carried
    drain_s: float = 2.0  # a cut also takes off the queue's bits spread over this long
    skip_ms: float = 400.0  # a cut with more than this queued also drops the queued video (0 = never)
    probe_every_ns: int = 1500 * MS  # wait after a failed probe
    clear_hold_ns: int = 500 * MS  # the queue clear this long before a probe
    fps_restore: float = 1.5  # restore the frame rate at this x the floor
    recovered_share: float = 0.8
    recovered_hold_ns: int = 2 * NS
    up_share: float = 0.8  # at this share of the row's target (probes land a little under it) ...
    up_hold_ns: int = 1000 * MS  # ... with a clear queue this long: one preset up
    down_settle_ns: int = 500 * MS  # a step down waits this long for the link's measure to settle
    up_backoff_ns: int = 10 * NS  # a step up undone this soon blocks the next one this long (doubling)
    raise_grace_ns: int = 1 * NS  # after a raise, an IDR burst: congestion only if the queue persists


@dataclass(frozen=True)
class Sample:
    """What the sender measured at `t_ns`."""

    t_ns: int
    acked_bytes: int  # acknowledged by the server since the start (all streams)
    queued_ms: float  # media waiting: backlog + unsent socket bytes
    other_kbps: float = 0.0  # the streams the controller does not drive (audio)
    sent_bytes: int = 0  # handed to the socket since the start (all streams, filler included)
    video_kbps: float = -1.0  # video actually sent lately (the encoder may stay under its target); <0: unknown
    backlog_ms: float = 0.0  # the part of queued_ms waiting in the sender, behind the socket (media time)


@dataclass
class Decision:
    """What to do after a sample: the encoder's bit rate and frame rate (None = unchanged), the filler
    rate to add now, and events (name, data)."""

    bitrate_kbps: int | None = None
    max_fps: float | None = None
    resolution: str | None = None  # a preset the encoder should switch to
    probe_kbps: int = 0
    skip_video: bool = False  # drop the queued video and ask the encoder for a keyframe
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class Ladder:
    """The presets a mode may step through (`RESOLUTION_DOWN_KBPS`), from the source's own (`top`)
    down to 180p, and where the controller stands on them."""

    def __init__(self, mode: str, top: str) -> None:
        self.mode = mode
        self.down = RESOLUTION_DOWN_KBPS[mode]
        names = [name for name, _ in PRESETS]
        self.presets = tuple(names[names.index(top):])
        self.index = 0
        self.up_since_ns: int | None = None  # at the row's target, queue clear, since
        self.pending: tuple[int, int, int] | None = None  # a step down: (since ns, link fits kbit/s, lowest cut)
        self.last_up_ns: int | None = None
        self.blocked_until_ns = 0
        self.backoff_ns = 0

    @property
    def preset(self) -> str:
        return self.presets[self.index]

    def fit(self, kbps: float) -> int:
        """The index of the largest preset, from the current one down, whose threshold `kbps` meets."""
        for i in range(self.index, len(self.presets)):
            threshold = self.down.get(self.presets[i])
            if threshold is None or kbps >= threshold:
                return i
        return len(self.presets) - 1


class RateController:
    """The state machine (see the module docstring).  `bitrate_kbps` is the current video target."""

    def __init__(self, row: ModeRow, *, fps: float = 30.0, min_fps: float = 8.0,
                 tuning: Tuning | None = None, ladder: Ladder | None = None) -> None:
        self.row = row
        self.ladder = ladder
        self.t = tuning or Tuning()
        self.fps = fps
        self.min_fps = min(min_fps, fps)
        self.bitrate_kbps = row.initial_kbps
        self.fps_lowered = False
        self.poor = False
        self.poor_since_ns = 0
        self.draining = False  # after a cut, until the queue is clear
        self.cut_link_kbps = 0.0  # the link measured at the last cut
        self.clear_since_ns: int | None = None
        self.probe_start_ns: int | None = None
        self.probe_level = 0
        self.probe_base_ms = 0.0
        self.grace = False  # an aborted probe's filler drains: congestion only if the queue grows
        self.last_queued_ms = 0.0
        self.busy_since_ns: int | None = None  # media has waited at every sample since (the link was busy)
        self.last_in_flight = 0
        self.probe_bytes = (0, 0)  # (acked, sent) when the probe started
        self.probe_factor = self.t.probe_factor
        self.next_probe_ns = 0
        self.acks: deque[tuple[int, int]] = deque()
        self.link_kbps = 0.0
        self.now_ns = 0  # the sample being decided
        self.raised_ns: int | None = None  # the last raise of the bit rate or the size (an encoder reopen)

    def set_row(self, row: ModeRow) -> Decision:
        """New targets (custom mode changed live, another resolution): the bit rate stays inside."""
        self.row = row
        d = Decision()
        clamped = min(max(self.bitrate_kbps, row.min_kbps), row.target_kbps)
        if clamped != self.bitrate_kbps:
            self._set_bitrate(d, clamped, "limits", 0.0)
        return d

    # ---- measuring --------------------------------------------------------------------------
    def _throughput(self, s: Sample) -> float | None:
        """kbit/s acknowledged: the lower of the last window and the last sample period (None until
        half a window is known).  Under congestion the link is saturated, so the last period is the
        link's rate now, without the window's memory of a faster past."""
        self.acks.append((s.t_ns, s.acked_bytes))
        while len(self.acks) > 2 and self.acks[1][0] <= s.t_ns - self.t.window_ns:
            self.acks.popleft()
        t0, b0 = self.acks[0]
        if s.t_ns - t0 < self.t.window_ns // 2:
            return None
        rate = (s.acked_bytes - b0) * 8 / ((s.t_ns - t0) / NS) / 1000
        recent = [(t, b) for t, b in self.acks if t <= s.t_ns - self.t.recent_ns]
        if recent:  # the last half second (two samples: one TCP retransmission timeout does not read as 0)
            t1, b1 = recent[-1]
            rate = min(rate, (s.acked_bytes - b1) * 8 / ((s.t_ns - t1) / NS) / 1000)
        return rate

    # ---- the state machine --------------------------------------------------------------------
    def step(self, s: Sample) -> Decision:
        d = Decision()
        thr = self._throughput(s)
        if thr is not None:
            self.link_kbps = thr
        clear = s.queued_ms < self.t.clear_ms
        if clear:
            self.clear_since_ns = s.t_ns if self.clear_since_ns is None else self.clear_since_ns
        else:
            self.clear_since_ns = None
        # rising: bytes in flight (sent, not acknowledged) grew, or the media waiting did (the socket holds
        # at most a round trip and `abr_in_flight_ms` of the plan: the rest of a queue waits in the sender)
        self.now_ns = s.t_ns
        in_flight = s.sent_bytes - s.acked_bytes
        sent_more = bool(s.sent_bytes) and in_flight > self.last_in_flight + 1500
        rising = sent_more or s.queued_ms > self.last_queued_ms
        was_over = self.last_queued_ms > self.t.cut_ms
        if s.queued_ms <= 0:
            self.busy_since_ns = None
        elif self.busy_since_ns is None:
            self.busy_since_ns = s.t_ns
        self.last_in_flight = in_flight
        self.last_queued_ms = s.queued_ms
        if clear:
            self.grace = False
        if self.probe_start_ns is not None and (self._filler_does_not_fit(s, thr)
                                                or self._probe_queued(s, in_flight) > self.t.probe_abort_ms):
            self._end_probe(s, failed=True)  # the filler queued: it stops now, the bit rate stays
            self.grace = True
        elif thr is not None and self._congested_now(s, thr, rising, was_over):
            self._end_probe(s, failed=True)
            self._congested(d, s, thr)
        elif self.probe_start_ns is not None:
            self._probing(d, s, thr)
        elif clear:
            self.draining = False
            self._maybe_probe(d, s)
        if self.ladder is not None:
            self._settle_down(d, s)
            self._step_up(d, s, clear)
        self._frame_rate(d)
        self._recovered(d, s)
        if self.probe_start_ns is not None:
            video = s.video_kbps if s.video_kbps >= 0 else self.bitrate_kbps
            d.probe_kbps = max(0, round(self.probe_level - video))
        return d

    def _congested_now(self, s: Sample, thr: float, rising: bool, was_over: bool) -> bool:
        """More than `cut_ms` queued while the link carries less than what is sent and less than the
        media plan (and it is no burst the link drains by itself: `_persists`); or more than
        `overflow_ms` queued and growing, whatever the link carries.  (A probe whose filler queues while
        the link carries the plan is no cut: the probe ends, `_filler_does_not_fit`.)"""
        if s.queued_ms <= self.t.cut_ms:
            return False
        if s.queued_ms > self.t.overflow_ms and rising:
            return True
        short = thr < self.t.carried_less * min(self._sending(s), self._plan(s))
        return short and self._link_was_busy(s) and self._persists(s, rising, was_over)

    def _link_was_busy(self, s: Sample) -> bool:
        """Whether the throughput measured is the link's: media waited at the sample before too.  A
        queue that appears from nothing in one sample (hard pictures after easy ones, a probe's filler)
        meets a throughput measured while the sender had less to send than the link carries: low, but
        the link's room, not its limit (on the steady 1 Mbit/s link, 690-760 kbit/s read with 250 ms
        queued, every 10 s, as the test pattern turned hard).  A real drop builds its queue over
        samples: it is cut one sample later at most."""
        return self.busy_since_ns is not None and s.t_ns - self.busy_since_ns >= self.t.period_ns * 0.8

    def _persists(self, s: Sample, rising: bool, was_over: bool) -> bool:
        """Whether queued media over `cut_ms` is congestion, not a burst the link drains by itself:
        always over twice `cut_ms`; in the `raise_grace` after a raise (the reopened encoder's IDR) only
        when the queue was already over `cut_ms` at the last sample and still grew; while an aborted
        probe's filler drains (`grace`) when it grows."""
        if s.queued_ms > 2 * self.t.cut_ms:
            return True
        if self.raised_ns is not None and s.t_ns - self.raised_ns <= self.t.raise_grace_ns:
            return was_over and rising
        return not self.grace or rising

    def _filler_does_not_fit(self, s: Sample, thr: float | None) -> bool:
        """Whether a probe's queue passed `cut_ms` while the link carries the media plan: the filler is
        what does not fit, not the media, so the probe ends and nothing is cut (needs byte counts)."""
        return (bool(s.sent_bytes) and s.queued_ms > self.t.cut_ms and thr is not None
                and thr >= self.t.carried_less * self._plan(s))

    def _probe_queued(self, s: Sample, in_flight: int) -> float:
        """ms that queued since the probe started: bytes sent and not acknowledged grew (in ms of the
        probe's rate: in the link's, the bytes a faster probe legitimately keeps in flight, its rate
        times the round trip, failed probes on a 4 Mbit/s link with room), or the media waiting in the
        sender grew (the socket holds at most a round trip and `abr_in_flight_ms` of the plan, so what
        the link does not carry waits behind it, where only the backlog's media time shows it; not
        `queued_ms`, whose unsent socket bytes are counted in ms of the media rate: during a probe
        mostly filler); without byte counts, the queue in ms."""
        if not s.sent_bytes:
            return s.queued_ms
        waiting = s.backlog_ms - self.probe_base_ms
        grown = in_flight - (self.probe_bytes[1] - self.probe_bytes[0])
        return max(waiting, grown * 8 / max(1.0, self.probe_level + s.other_kbps))

    def _plan(self, s: Sample) -> float:
        """The media the controller plans to send, kbit/s: its video bit rate and the other streams (a
        probe's filler is not part of it: a link that carries the plan but not the filler only ends the
        probe)."""
        return self.bitrate_kbps + s.other_kbps

    def _sending(self, s: Sample) -> float:
        """What goes out now, kbit/s: the video actually sent (or its target) and the other streams."""
        video = s.video_kbps if s.video_kbps >= 0 else self.bitrate_kbps
        probe = max(0.0, self.probe_level - video) if self.probe_start_ns is not None else 0.0
        return video + s.other_kbps + probe

    def _congested(self, d: Decision, s: Sample, thr: float) -> None:
        queued_kbit = s.queued_ms / 1000 * (self.bitrate_kbps + s.other_kbps)
        fits = int(self.t.headroom * thr - s.other_kbps - queued_kbit / self.t.drain_s)
        if self.draining and thr > 0.85 * self.cut_link_kbps:
            return  # the queue of the last cut is still draining and the link did not fall again
        if self.ladder is not None:  # the size for what the link carries (the queue's drain is temporary)
            self._step_down(s, int(self.t.headroom * thr - s.other_kbps), fits)
        new = min(max(fits, self.row.min_kbps), self.row.target_kbps)
        self.draining = True
        self.cut_link_kbps = thr
        self.probe_factor = self.t.probe_factor
        self.next_probe_ns = s.t_ns + self.t.probe_every_ns
        if new < self.bitrate_kbps:
            self._set_bitrate(d, new, "congestion", thr, queued_ms=round(s.queued_ms, 1))
            d.skip_video = bool(self.t.skip_ms) and s.queued_ms > self.t.skip_ms
        if not self.poor:
            self.poor = True
            self.poor_since_ns = s.t_ns
            d.events.append(("network_poor", {
                "link_kbps": round(thr, 1), "queued_ms": round(s.queued_ms, 1), "bitrate_kbps": self.bitrate_kbps,
                "target_kbps": self.row.target_kbps}))

    def _step_down(self, s: Sample, link_fits: int, cut_fits: int) -> None:
        """A cut measured that the link carries `link_fits` kbit/s of video: under the preset's
        threshold, a step down is due.  It waits `down_settle` (the cut's bit rate applies at once, in
        place): the throughput measured in the first moments of a drop still holds bytes of the faster
        past, and each step costs an IDR on the congested link; so the lowest measure of the link over
        that time picks the preset (at least one down), once.  (The lowest, not the last: a reading can
        come out a little over the link's rate, and on a 300 kbit/s link that was the difference between
        360p and 480p; the dips of TCP's loss recovery, which once made the lowest overshoot, are rare
        since the socket holds at most a round trip plus `abr_in_flight_ms`.)"""
        ladder = self.ladder
        assert ladder is not None
        if ladder.pending is not None:
            since, fits, lowest = ladder.pending
            ladder.pending = (since, min(fits, link_fits), min(lowest, cut_fits))
        elif ladder.fit(link_fits) > ladder.index:
            ladder.pending = (s.t_ns, link_fits, cut_fits)

    def _settle_down(self, d: Decision, s: Sample) -> None:
        ladder = self.ladder
        assert ladder is not None
        if ladder.pending is None:
            return
        since, link_fits, lowest = ladder.pending
        if s.t_ns - self.acks[0][0] >= self.t.window_ns // 2:  # the link's rate now: the lowest reading counts
            link_fits = min(link_fits, int(self.t.headroom * self.link_kbps - s.other_kbps))
            ladder.pending = (since, link_fits, lowest)
        if s.t_ns - since < self.t.down_settle_ns:
            return
        ladder.pending = None
        index = min(len(ladder.presets) - 1, max(ladder.index + 1, ladder.fit(link_fits)))
        if ladder.last_up_ns is not None and s.t_ns - ladder.last_up_ns < self.t.up_backoff_ns:
            ladder.backoff_ns = max(self.t.up_backoff_ns, 2 * ladder.backoff_ns)  # the step up did not hold
            ladder.blocked_until_ns = s.t_ns + ladder.backoff_ns
        self._set_preset(d, index, "congestion", self.link_kbps)
        new = min(max(lowest, self.row.min_kbps), self.row.target_kbps)  # the new row's floor is lower
        if new < self.bitrate_kbps:
            self._set_bitrate(d, new, "congestion", self.link_kbps)

    def _step_up(self, d: Decision, s: Sample, clear: bool) -> None:
        """One preset up after `up_share` of the row's target held with a clear queue for `up_hold`."""
        ladder = self.ladder
        assert ladder is not None
        holding = (clear and ladder.index > 0 and not self.draining
                   and self.bitrate_kbps >= self.t.up_share * self.row.target_kbps
                   and s.t_ns >= ladder.blocked_until_ns)
        if not holding:
            ladder.up_since_ns = None
            return
        if ladder.up_since_ns is None:
            ladder.up_since_ns = s.t_ns
        if s.t_ns - ladder.up_since_ns < self.t.up_hold_ns:
            return
        ladder.last_up_ns = s.t_ns
        self.raised_ns = s.t_ns  # the encoder reopens at the bigger size: an IDR
        self._set_preset(d, ladder.index - 1, "recovered", self.link_kbps)
        self.next_probe_ns = s.t_ns  # the bigger picture's target is higher: probe towards it at once

    def _set_preset(self, d: Decision, index: int, reason: str, link_kbps: float) -> None:
        ladder = self.ladder
        assert ladder is not None
        old = ladder.preset
        ladder.index = index
        ladder.up_since_ns = None
        self.row = MODES[ladder.mode][ladder.preset]
        d.resolution = ladder.preset
        d.events.append(("resolution_changed", {"resolution": ladder.preset, "previous": old, "reason": reason,
                                                "bitrate_kbps": self.bitrate_kbps, "link_kbps": round(link_kbps, 1)}))
        clamped = min(max(self.bitrate_kbps, self.row.min_kbps), self.row.target_kbps)
        if clamped != self.bitrate_kbps:
            self._set_bitrate(d, clamped, "limits", link_kbps)

    def _maybe_probe(self, d: Decision, s: Sample) -> None:
        if self.bitrate_kbps >= self.row.target_kbps or s.t_ns < self.next_probe_ns:
            return
        if self.clear_since_ns is None or s.t_ns - self.clear_since_ns < self.t.clear_hold_ns:
            return
        self.probe_start_ns = s.t_ns
        self.probe_base_ms = s.backlog_ms
        self.probe_bytes = (s.acked_bytes, s.sent_bytes)
        self.probe_level = min(self.row.target_kbps, max(self.bitrate_kbps + 50,
                                                         round(self.bitrate_kbps * self.probe_factor)))

    def _probing(self, d: Decision, s: Sample, thr: float | None) -> None:
        assert self.probe_start_ns is not None
        if s.t_ns - self.probe_start_ns >= self.t.probe_ns:
            acked, sent = s.acked_bytes - self.probe_bytes[0], s.sent_bytes - self.probe_bytes[1]
            # the link did not carry it all: queueing began.  Unless what is missing is no more than the
            # last frame's bytes (its filler included), which may simply not be acknowledged yet: at
            # the frame rate floor (8 fps) that frame is an eighth of a second of the probe, and a
            # delayed ACK alone kept it out, failing probes on a link with room to spare
            last_frame = self.probe_level * 125 / (self.min_fps if self.fps_lowered else self.fps)
            if acked < self.t.probe_carried * sent and sent - acked > last_frame:
                self._end_probe(s, failed=True)
                return
            carried_kbps = acked * 8 / ((s.t_ns - self.probe_start_ns) / NS) / 1000
            level = min(self.probe_level, round(self.t.headroom_up * carried_kbps - s.other_kbps))
            self._end_probe(s, failed=False)
            if level <= self.bitrate_kbps:
                return
            self._set_bitrate(d, level, "probe", thr or 0.0)
            self._maybe_probe(d, s)  # the link keeps up: the next step at once

    def _end_probe(self, s: Sample, *, failed: bool) -> None:
        if self.probe_start_ns is None:
            return
        self.probe_start_ns = None
        if failed:
            self.probe_factor = max(self.t.min_probe_factor, 1 + (self.probe_factor - 1) / 2)
            self.next_probe_ns = s.t_ns + self.t.probe_every_ns
        else:  # the link keeps up: the next probe at once, and bolder again
            self.next_probe_ns = s.t_ns
            self.probe_factor = min(self.t.probe_factor, 1 + (self.probe_factor - 1) * 2)

    def _set_bitrate(self, d: Decision, kbps: int, reason: str, link_kbps: float, **more: Any) -> None:
        old, self.bitrate_kbps = self.bitrate_kbps, kbps
        if kbps > old:
            self.raised_ns = self.now_ns
        d.bitrate_kbps = kbps
        d.events.append(("bitrate_changed", {"bitrate_kbps": kbps, "previous_kbps": old, "reason": reason,
                                             "link_kbps": round(link_kbps, 1), **more}))

    def _frame_rate(self, d: Decision) -> None:
        if not self.row.fps_at_floor or self.min_fps >= self.fps:
            return
        at_floor = self.bitrate_kbps <= self.row.min_kbps
        if at_floor and not self.fps_lowered:
            self.fps_lowered = True
            d.max_fps = self.min_fps
            d.events.append(("fps_changed", {"fps": self.min_fps, "reason": "bitrate_floor",
                                             "bitrate_kbps": self.bitrate_kbps}))
        elif self.fps_lowered and self.bitrate_kbps >= self.t.fps_restore * self.row.min_kbps:
            self.fps_lowered = False
            d.max_fps = 0.0  # every input frame again
            d.events.append(("fps_changed", {"fps": self.fps, "reason": "recovered",
                                             "bitrate_kbps": self.bitrate_kbps}))

    def _recovered(self, d: Decision, s: Sample) -> None:
        if not self.poor or self.clear_since_ns is None:
            return
        if self.bitrate_kbps < self.t.recovered_share * self.row.target_kbps:
            return
        if s.t_ns - self.clear_since_ns < self.t.recovered_hold_ns:
            return
        self.poor = False
        d.events.append(("network_recovered", {
            "bitrate_kbps": self.bitrate_kbps, "link_kbps": round(self.link_kbps, 1),
            "queued_ms": round(s.queued_ms, 1), "poor_s": round((s.t_ns - self.poor_since_ns) / NS, 2)}))


class ObsController:
    """OBS's dynamic bit rate, from its public behaviour (for the `abr` benchmark): more than 200 ms
    queued cuts to the throughput of the last seconds (rounded down to 100 kbit/s); then +10% of the
    original bit rate every 4 s while the queue stays clear."""

    def __init__(self, original_kbps: int, *, min_kbps: int = 100, window_ns: int = 2 * NS) -> None:
        self.original = original_kbps
        self.min_kbps = min_kbps
        self.bitrate_kbps = original_kbps
        self.window_ns = window_ns
        self.acks: deque[tuple[int, int]] = deque()
        self.last_change_ns = 0

    def step(self, s: Sample) -> Decision:
        d = Decision()
        self.acks.append((s.t_ns, s.acked_bytes))
        while len(self.acks) > 2 and self.acks[1][0] <= s.t_ns - self.window_ns:
            self.acks.popleft()
        t0, b0 = self.acks[0]
        if s.queued_ms > 200 and s.t_ns - t0 >= self.window_ns // 2:
            thr = (s.acked_bytes - b0) * 8 / ((s.t_ns - t0) / NS) / 1000
            new = max(self.min_kbps, int((thr - s.other_kbps) // 100 * 100))
            if new < self.bitrate_kbps:
                self.bitrate_kbps = new
                d.bitrate_kbps = new
                self.last_change_ns = s.t_ns
        elif s.queued_ms <= 200 and self.bitrate_kbps < self.original \
                and s.t_ns - self.last_change_ns >= 4 * NS:
            self.bitrate_kbps = min(self.original, self.bitrate_kbps + self.original // 10)
            d.bitrate_kbps = self.bitrate_kbps
            self.last_change_ns = s.t_ns
        return d
