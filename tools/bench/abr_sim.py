"""A fluid model of a bottleneck link driven by a rate controller: the synthetic sample sequences of
the controller's unit tests and the `abr` benchmark's simulated profile.

Each step of `dt` (the controller's sample period): the encoder's output follows its target with a
first-order lag (`encoder_lag_s`, x264's VBV settles in about a second), the sender offers video +
audio + probe filler, the link carries at most its rate, the rest waits in the queue; the sample the
controller gets is what the sender measures: bytes acknowledged and the queue in ms of media.  With
`raise_burst_s`, each raise of the target also sends that many seconds of the new rate at once (the
IDR of an encoder that reopens to go above its VBV cap).  With `content`, the encoder's output is
that factor of its target at each second (easy pictures: under it; hard ones: over it for a while, what
a VBV buffer allows: `busy_content`).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mediaengine.actors.rtmp_sender.rate import NS, Decision, Sample

Profile = Sequence[tuple[float, float]]  # (from second, link kbit/s)


class Controller(Protocol):
    bitrate_kbps: int

    def step(self, s: Sample) -> Decision: ...


def link_at(profile: Profile, t_s: float) -> float:
    rate = profile[0][1]
    for start, kbps in profile:
        if t_s >= start:
            rate = kbps
    return rate


@dataclass
class Trace:
    """Per step: time (s), link, encoder output (video kbit/s), video target, queued ms, probe."""

    t: list[float] = field(default_factory=list)
    link: list[float] = field(default_factory=list)
    out: list[float] = field(default_factory=list)
    target: list[int] = field(default_factory=list)
    queued_ms: list[float] = field(default_factory=list)
    probe: list[int] = field(default_factory=list)
    events: list[tuple[float, str, dict[str, object]]] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    skips: list[bool] = field(default_factory=list)  # the decision dropped the queued video


def busy_content(t_s: float) -> float:
    """The encoder's output over its target for a picture that is easy for 8.5 s and hard for 1.5 s,
    over and over: 0.75x, then 1.35x (libx264 with a VBV buffer of 1 s of its target, on the test
    pattern's noise, which x264 sometimes predicts from the last frame and sometimes cannot: measured
    0.65-0.95x, then up to 1.26-1.4x for about a second)."""
    return 1.35 if t_s % 10.0 >= 8.5 else 0.75


def simulate(controller: Controller, profile: Profile, duration_s: float, *, audio_kbps: float = 64.0,
             dt_s: float = 0.25, encoder_lag_s: float = 0.4, fps: float = 30.0,
             raise_burst_s: float = 0.0, rate_window_s: float = 1.0,
             content: Callable[[float], float] | None = None,
             on_step: Callable[[float], None] | None = None) -> Trace:
    tr = Trace()
    out = float(controller.bitrate_kbps)
    queue_kbit = 0.0
    acked = 0.0
    sent = 0.0
    probe = 0
    cur_fps = fps
    n = round(duration_s / dt_s)
    alpha = min(1.0, dt_s / encoder_lag_s)
    last_target = controller.bitrate_kbps
    video_window: deque[float] = deque(maxlen=max(1, round(rate_window_s / dt_s)))
    for i in range(1, n + 1):
        t = i * dt_s
        link = link_at(profile, t)
        out += (controller.bitrate_kbps - out) * alpha
        video = out * content(t) if content is not None else out
        rate = video + audio_kbps + probe  # the queue's ms are at this rate
        if controller.bitrate_kbps > last_target:  # the reopened encoder's IDR, in this step
            video += raise_burst_s * controller.bitrate_kbps / dt_s
        last_target = controller.bitrate_kbps
        offered = video + audio_kbps + probe
        video_window.append(video)  # the sender measures the video it sent over its rate window
        video_kbps = sum(video_window) / len(video_window)
        carried = min(link, queue_kbit / dt_s + offered)
        queue_kbit = max(0.0, queue_kbit + (offered - carried) * dt_s)
        acked += carried * dt_s * 1000 / 8
        sent += offered * dt_s * 1000 / 8
        queued_ms = queue_kbit / max(rate, 1.0) * 1000
        # the queue waits in the sender (the socket holds little: the in-flight bound)
        d = controller.step(Sample(round(t * NS), round(acked), queued_ms, audio_kbps, round(sent), video_kbps,
                                   queued_ms))
        probe = d.probe_kbps
        if d.skip_video:  # the sender drops the queued video: the audio's share of the queue stays
            kept = queue_kbit * audio_kbps / max(rate, 1.0)
            sent -= (queue_kbit - kept) * 1000 / 8
            queue_kbit = kept
        if d.max_fps is not None:
            cur_fps = d.max_fps or fps
        tr.events += [(t, name, data) for name, data in d.events]
        tr.t.append(t)
        tr.link.append(link)
        tr.out.append(video)
        tr.target.append(controller.bitrate_kbps)
        tr.queued_ms.append(queued_ms)
        tr.probe.append(probe)
        tr.fps.append(cur_fps)
        tr.skips.append(d.skip_video)
        if on_step is not None:
            on_step(t)
    return tr


def direction_changes(values: Sequence[float]) -> int:
    """How often a sequence turns from rising to falling or back (flat steps ignored)."""
    changes = 0
    last = 0
    for a, b in itertools.pairwise(values):
        sign = (b > a) - (b < a)
        if sign and last and sign != last:
            changes += 1
        if sign:
            last = sign
    return changes
