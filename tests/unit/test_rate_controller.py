"""The rate controller (`mediaengine.actors.rtmp_sender.rate`) fed with synthetic sample sequences:
a fluid model of a bottleneck link (`tools.bench.abr_sim`), no processes, no clock."""

from __future__ import annotations

import itertools

from mediaengine.actors.rtmp_sender.rate import (
    MODES,
    PRESETS,
    RESOLUTION_DOWN_KBPS,
    Ladder,
    ModeRow,
    ObsController,
    RateController,
    Sample,
    Tuning,
    mode_row,
    preset_for,
)

from tools.bench.abr_sim import busy_content, direction_changes, simulate

ROW = ModeRow(target_kbps=2500, min_kbps=150, initial_kbps=2000, fps_at_floor=True)
AUDIO = 64.0


def first_at_or_after(tr_t: list[float], t: float) -> int:
    return next(i for i, x in enumerate(tr_t) if x >= t)


def test_modes_are_tables_per_resolution() -> None:
    assert preset_for(720) == "720p" and preset_for(544) == "540p" and preset_for(200) == "180p"
    assert mode_row("resolution_first", 720) == ModeRow(2000, 600, 1500, True)  # the SDK's 720p figures
    assert mode_row("fluency_first", 720) == ModeRow(1200, 300, 1000, True)
    assert mode_row("custom", 720, ROW) is ROW
    for mode in MODES.values():  # fluency_first aims lower with a lower floor
        for row in mode.values():
            assert row.min_kbps <= row.initial_kbps <= row.target_kbps
    assert all(MODES["fluency_first"][p].target_kbps < MODES["resolution_first"][p].target_kbps
               for p in MODES["fluency_first"])


def test_drop_cuts_under_the_link_within_one_sample_period() -> None:
    c = RateController(ROW)
    tr = simulate(c, [(0, 4000), (20, 1000)], 30, audio_kbps=AUDIO)
    i = first_at_or_after(tr.t, 20)
    cut = next(j for j in range(i, len(tr.t)) if tr.target[j] + AUDIO < 1000)
    # the cut comes with the first sample whose queue shows the congestion (cut_ms = 300 ms): at once
    seen = next(j for j in range(i, len(tr.t)) if tr.queued_ms[j] > 300)
    assert cut == seen and tr.t[cut] - 20 <= 0.5, (tr.t[cut] - 20, tr.t[seen] - 20)
    first_poor = [e for e in tr.events if e[1] == "network_poor"]
    assert len(first_poor) == 1 and first_poor[0][0] == tr.t[cut]
    # cut to what the link carries (measured), not a fixed step: under 85% of it, less the queue to drain
    cut_event = next(e[2] for e in tr.events if e[1] == "bitrate_changed" and e[2]["reason"] == "congestion")
    assert 900 <= cut_event["link_kbps"] <= 1100, cut_event
    assert 0.2 * 1000 <= tr.target[cut] + AUDIO <= 0.85 * 1000
    # and the queue drained: after 2 s no standing queue, only short probe spikes (filler stops at 150 ms)
    later = tr.queued_ms[cut + 8:]
    assert max(later) < 600 and sorted(later)[len(later) // 2] < 100, later


def test_rise_reaches_80_percent_within_10_s_and_recovers_once() -> None:
    c = RateController(ROW)
    tr = simulate(c, [(0, 4000), (10, 1000), (25, 300), (40, 4000)], 60, audio_kbps=AUDIO)
    i = first_at_or_after(tr.t, 40)
    reach = next(j for j in range(i, len(tr.t)) if tr.target[j] >= 0.8 * ROW.target_kbps)
    assert tr.t[reach] - 40 <= 10, tr.t[reach] - 40
    names = [e[1] for e in tr.events if e[1].startswith("network_")]
    assert names == ["network_poor", "network_recovered"]  # one episode: 1000 and 300 are both poor
    # never faster than the link proved: the target never exceeded what the link carried (outside the
    # 0.75 s after each drop in which the controller cannot know yet)
    over = [tr.t[j] for j in range(len(tr.t)) if tr.target[j] + AUDIO > tr.link[j]
            and not any(0 <= tr.t[j] - drop < 0.75 for drop in (10, 25))]
    assert over == [], over
    # at the floor the frame rate went down, and back up after the rise
    fps = [e for e in tr.events if e[1] == "fps_changed"]
    assert [e[2]["reason"] for e in fps] == ["bitrate_floor", "recovered"]


def test_steady_link_changes_direction_at_most_once_a_minute() -> None:
    for link in (600.0, 1000.0, 1800.0):
        c = RateController(ROW)
        tr = simulate(c, [(0, link)], 300, audio_kbps=AUDIO)
        settled = first_at_or_after(tr.t, 10)
        assert direction_changes(tr.target[settled:]) <= 290 / 60, (link, direction_changes(tr.target))
        # and it uses the link: the average over the last 4 minutes is at least 75% of it
        tail = tr.target[first_at_or_after(tr.t, 60):]
        assert sum(tail) / len(tail) + AUDIO >= 0.75 * link, (link, sum(tail) / len(tail))


class SentOnly(RateController):
    """The controller with the old congestion rule: the link judged against what is sent, not the plan,
    as soon as a queue shows (not only once the link was busy for a sample)."""

    def _plan(self, s: Sample) -> float:
        return float("inf")

    def _link_was_busy(self, s: Sample) -> bool:
        return True


def test_an_encoder_over_its_target_for_a_moment_is_no_turn_around() -> None:
    """On a real steady link the encoder's output moves with the picture: under its target for easy
    pictures, over it for a second or so of hard ones (`busy_content`).  Such a burst fills a link that
    carries the target: the queue drains when the encoder is back on it, so that queue is no cut (it
    turned the bit rate around 6-13 times a minute on the shaped 1 Mbit/s link); a link that carries less
    than the plan still is one.  The same controller judging the link against what was sent alone
    turns around several times a minute (the check that this test can fail)."""

    for link in (600.0, 1000.0, 1800.0):
        tr = simulate(RateController(ROW), [(0, link)], 300, audio_kbps=AUDIO, content=busy_content)
        settled = first_at_or_after(tr.t, 30)
        turns = direction_changes(tr.target[settled:])
        assert turns <= 270 / 60, (link, turns, [e for e in tr.events if e[1] == "bitrate_changed"][-6:])
        assert max(tr.queued_ms[settled:]) < 1000, (link, max(tr.queued_ms[settled:]))
        tail = tr.target[first_at_or_after(tr.t, 60):]
        assert sum(tail) / len(tail) + AUDIO >= 0.7 * link, (link, sum(tail) / len(tail))
        old = simulate(SentOnly(ROW), [(0, link)], 300, audio_kbps=AUDIO, content=busy_content)
        assert direction_changes(old.target[settled:]) > 270 / 60, link  # the old rule fails this check
    # a link that falls under the plan is still cut at once
    tr = simulate(RateController(ROW), [(0, 4000), (60, 800)], 70, audio_kbps=AUDIO, content=busy_content)
    cut = next(t for t, name, e in tr.events if name == "bitrate_changed" and e["reason"] == "congestion")
    assert 60 <= cut <= 61.5, cut


def test_a_queue_out_of_nothing_waits_a_sample_before_the_link_counts_short() -> None:
    """Throughput measured while nothing waited is the sender's rate, not the link's: a queue that
    appears from nothing in one sample (hard pictures after easy ones) is no cut at that sample; if it
    is still there at the next, the link did not carry it: cut."""
    def run(c: RateController) -> list[int]:
        cut_at: list[int] = []
        acked = sent = 0
        for i in range(16):
            queued = 0.0 if i < 10 else 350.0 + 20 * (i - 10)
            acked += 700 * 250 // 8  # 700 kbit/s acknowledged all along
            sent += 700 * 250 // 8 + (4000 if i >= 10 else 0)
            d = c.step(Sample(i * 250_000_000, acked, queued, AUDIO, sent, video_kbps=800.0))
            if d.bitrate_kbps is not None and any(e[0] == "network_poor" for e in d.events):
                cut_at.append(i)
        return cut_at

    assert run(RateController(ROW)) == [11]  # the second sample with a queue
    assert run(SentOnly(ROW)) == [10]  # the old rule: the first


def test_probe_filler_never_moves_the_bit_rate_down() -> None:
    c = RateController(ROW)
    tr = simulate(c, [(0, 1000)], 60, audio_kbps=AUDIO)
    probes = [j for j in range(1, len(tr.t)) if tr.probe[j] and not tr.probe[j - 1]]
    assert len(probes) >= 5  # it keeps checking for a rise
    downs = [j for j in range(1, len(tr.t)) if tr.target[j] < tr.target[j - 1]]
    assert all(not tr.probe[j - 1] or tr.queued_ms[j] > 300 for j in downs)


def test_obs_controller_cuts_then_climbs_10_percent_every_4_s() -> None:
    c = ObsController(2000)
    d = c.step(Sample(0, 0, 0.0))
    d = c.step(Sample(1_000_000_000, 125_000, 500.0, 64.0))  # 1000 kbit/s acknowledged, 500 ms queued
    assert d.bitrate_kbps == 900  # 1000 - 64 audio, rounded down to 100
    assert c.step(Sample(3_000_000_000, 375_000, 0.0)).bitrate_kbps is None
    assert c.step(Sample(5_000_000_000, 625_000, 0.0)).bitrate_kbps == 1100


def fluency(top: str = "720p") -> RateController:
    return RateController(mode_row("fluency_first", 720), min_fps=8.0, ladder=Ladder("fluency_first", top))


def test_resolution_thresholds_are_data_with_hysteresis() -> None:
    down = RESOLUTION_DOWN_KBPS["fluency_first"]
    names = [name for name, _ in PRESETS]
    for upper, lower in itertools.pairwise(names):
        # the step back up happens at 80% of the lower preset's target: 1.2x over the step-down point
        assert 0.8 * MODES["fluency_first"][lower].target_kbps >= 1.2 * down[upper], (upper, lower)
    assert names[-1] not in down  # nothing under 180p
    assert "resolution_first" not in RESOLUTION_DOWN_KBPS  # it keeps the picture
    ladder = Ladder("fluency_first", "720p")
    assert ladder.presets == ("720p", "540p", "480p", "360p", "240p", "180p")
    assert [ladder.fit(k) for k in (1000, 325, 324, 191, 129, 50)] == [0, 0, 1, 3, 4, 5]


def test_fluency_first_steps_the_resolution_down_at_300k_and_back_after_the_rise() -> None:
    c = fluency()
    tr = simulate(c, [(0, 4000), (10, 300), (25, 4000)], 45, audio_kbps=AUDIO)
    steps = [(t, e["previous"], e["resolution"], e["reason"])
             for t, name, e in tr.events if name == "resolution_changed"]
    down = [s for s in steps if s[3] == "congestion"]
    up = [s for s in steps if s[3] == "recovered"]
    # one step straight down to the preset the measured rate fits, at the first cut (within 1 s)
    assert len(down) == 1 and down[0][1:3] == ("720p", "360p") and 10 <= down[0][0] <= 11, steps
    # and up one preset at a time after the rise, back to 720p within 12 s, never down again
    assert [s[2] for s in up] == ["480p", "540p", "720p"] and up[-1][0] - 25 <= 12, steps
    assert all(s[0] > 25 for s in up)
    assert c.ladder is not None and c.ladder.preset == "720p" and c.row == MODES["fluency_first"]["720p"]
    # at 300 kbit/s the 360p row applies: its floor is low enough that the bit rate fits the link
    i = first_at_or_after(tr.t, 15)
    assert all(tr.target[j] + AUDIO < 300 for j in range(i, first_at_or_after(tr.t, 25))), tr.target[i:i + 40]


def test_resolution_steady_link_no_oscillation() -> None:
    for link in (330.0, 450.0, 1500.0):  # around 480p's and 720p's thresholds, 720p's target
        c = fluency()
        tr = simulate(c, [(0, 4000), (5, link)], 300, audio_kbps=AUDIO)
        steps = [(round(t, 2), e["resolution"]) for t, name, e in tr.events if name == "resolution_changed"]
        assert len(steps) <= 2 + 295 / 60, (link, steps)  # settles: at most one more change a minute


def test_resolution_first_and_custom_keep_the_picture() -> None:
    c = RateController(mode_row("resolution_first", 720))
    tr = simulate(c, [(0, 4000), (5, 300), (20, 4000)], 30, audio_kbps=AUDIO)
    assert not [e for e in tr.events if e[1] == "resolution_changed"]


def test_a_raise_keyframe_burst_is_not_congestion() -> None:
    """A raise above the encoder's VBV cap reopens it; its IDR queues for one sample (measured with
    x264's own 90% VBV fill: 2.0 Mbit in the first 250 ms at 2 Mbit/s, 480 ms of media queued on a
    4 Mbit/s link with room, which fired network_poor at 4 Mbit/s).  Not a cut, not an episode; yet a
    real drop right after a raise is still cut, one sample later at most."""
    # headroom_up 1.0: the probe that proves the target raises straight to it, so no probe follows
    # (a probe's filler would take the burst as a failed probe instead): the case that failed
    for burst in (0.5, 0.6):
        c = RateController(ROW, tuning=Tuning(headroom_up=1.0))
        tr = simulate(c, [(0, 4000)], 30, audio_kbps=AUDIO, raise_burst_s=burst)
        raises = [j for j in range(1, len(tr.t)) if tr.target[j] > tr.target[j - 1]]
        assert raises and max(tr.queued_ms[j + 1] for j in raises) > 300, "the burst queued"
        assert not [e for e in tr.events if e[1] == "network_poor"], (burst, tr.events)
        assert not [e for e in tr.events if e[1] == "bitrate_changed" and e[2]["reason"] == "congestion"]
        # the same without the grace after a raise (nor the plan: the link carries the plan) is congestion
        c = SentOnly(ROW, tuning=Tuning(headroom_up=1.0, raise_grace_ns=0))
        tr = simulate(c, [(0, 4000)], 30, audio_kbps=AUDIO, raise_burst_s=burst)
        assert [e for e in tr.events if e[1] == "network_poor"], burst
    # a drop in the second after a raise: cut within 0.75 s of the first sample that shows it
    c = RateController(ROW)
    first_raise: list[float] = []

    def note(t: float) -> None:
        if not first_raise and c.raised_ns is not None:
            first_raise.append(t)

    simulate(c, [(0, 4000)], 30, audio_kbps=AUDIO, raise_burst_s=0.5, on_step=note)
    drop = first_raise[0] + 0.25
    c = RateController(ROW)
    tr = simulate(c, [(0, 4000), (drop, 800)], drop + 5, audio_kbps=AUDIO, raise_burst_s=0.5)
    i = first_at_or_after(tr.t, drop)
    seen = next(j for j in range(i, len(tr.t)) if tr.queued_ms[j] > 300)
    cut = next(j for j in range(i, len(tr.t)) if tr.target[j] + AUDIO < 800)
    assert tr.t[cut] - tr.t[seen] <= 0.25 and tr.t[cut] - drop <= 1.0, (tr.t[seen] - drop, tr.t[cut] - drop)


def test_a_cut_with_a_long_queue_skips_the_queued_video() -> None:
    """A cut with more than skip_ms queued also asks the sender to drop the queued video and the encoder
    for a keyframe (`skip_video`); with a higher skip_ms the same cut does not; probes never do."""
    for skip_ms, expect in ((300.0, True), (5000.0, False)):
        c = RateController(ROW, tuning=Tuning(skip_ms=skip_ms))
        tr = simulate(c, [(0, 4000), (10, 1000)], 20, audio_kbps=AUDIO)
        skips = [(t, q) for t, q, k in zip(tr.t, tr.queued_ms, tr.skips, strict=True) if k]
        assert bool(skips) == expect, skips
        cuts = [e[0] for e in tr.events if e[1] == "bitrate_changed" and e[2]["reason"] == "congestion"]
        assert all(t in cuts and q > skip_ms for t, q in skips), (skips, cuts)
