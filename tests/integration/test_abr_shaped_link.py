"""The rate controller on a real shaped link (issue 15): nginx-rtmp in its own network namespace behind
a veth pair, `tc tbf` on the engine's end stepping 4 Mbit/s -> 1 -> 0.3 -> 4 while pushing, and
`mediaengine play --json` inside the server's namespace recording stalls.  The short CI profile
(42 s), and a steady 1 Mbit/s link (75 s: the bit rate turns around at most once a minute); the
longer one and the comparison with OBS's algorithm and a fixed bit rate are the `abr` benchmark
(`python -m tools.bench abr`), which runs the same `run_profile`.

A second run (`fluency`, 36 s) pushes a 1280x720 source in `fluency_first`: at 300 kbit/s the
resolution steps down once and comes back to 720p after the rise, the encoder applies each step and
the player decodes every size.

The engine runs in the test's own namespace (the engine's side of the veth pair, the shaped one);
the server and the player in the new one.  Needs root and nginx's RTMP module, skipped otherwise.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tools.bench.abr import AUDIO_KBPS, MIN_KBPS, QUICK_PROFILE, QUICK_S, run_profile, unavailable

pytestmark = [pytest.mark.integration, pytest.mark.rtmp, pytest.mark.timeout(150)]


@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_rate_controller_follows_a_shaped_link(tmp_path: Path) -> None:
    run = run_profile("engine", QUICK_PROFILE, QUICK_S, tmp_path)
    report = run.to_json()
    print(report)  # the figures, with -rA / on failure
    # after each drop, the encoder's target (+ audio) is under the new link rate within 1.5 s
    reactions = run.drop_reactions()
    assert len(reactions) == 2 and all(not math.isnan(r) and r <= 1.5 for r in reactions), report
    # the controller's cut followed the measured link, not a fixed step (or stopped at the floor)
    cuts = [e["data"] for e in run.events_named("bitrate_changed") if e["data"]["reason"] == "congestion"]
    assert cuts and all(c["bitrate_kbps"] + AUDIO_KBPS < c["link_kbps"] or c["bitrate_kbps"] == MIN_KBPS
                        for c in cuts), cuts
    # after the rise, 80% of min(link, target) within 10 s
    assert run.recovery() <= 10.0, report
    # the viewer's longest freeze (the end of the push aside): the 1 s.  Measured 0.50-0.80 s in 20
    # runs since the socket holds at most a round trip + 75 ms of the plan and a cut drops the queued video
    # (docs/architecture.md "The viewer's stalls"; 0.53-0.94 s before, with 1.46 s once in CI)
    assert run.longest_stall_s <= 1.0, report
    # queued video is dropped only by a cut that found more than 400 ms queued (audio never: below)
    skips = run.events_named("video_skipped")
    assert all(e["data"]["queued_ms"] > 400 for e in skips), skips
    # poor/recovered episodes: 1 Mbit/s and 300 kbit/s are both poor (one episode), the rise ends it.  On a
    # quiet machine that is the only episode; on a CI host that stalls the server for a moment the link
    # looks congested again after the rise (a cut at 4 Mbit/s seen at 33 s): then that episode must end
    # too.  The events alternate, the first poor comes with the first drop, and the push ends recovered
    network = [(e["name"], e["t"]) for e in run.events if e["name"].startswith("network_")]
    assert [n for n, _ in network] == ["network_poor", "network_recovered"] * (len(network) // 2), report
    assert network and QUICK_PROFILE[1][0] <= network[0][1] <= QUICK_PROFILE[2][0], (
        network, run.samples_near(network[0][1]) if network else run.samples)
    poor = run.events_named("network_poor")[0]["data"]
    assert {"link_kbps", "queued_ms", "bitrate_kbps", "target_kbps"} <= set(poor)
    # at the floor the frame rate went down to min_fps, and back up after the rise
    fps = [e["data"]["fps"] for e in run.events_named("fps_changed")]
    assert fps and fps[0] == 8.0 and fps[-1] == 30.0, fps
    # audio is never dropped, and the encoder applied every decision (no configure_failed)
    assert run.audio_dropped == 0, report
    assert not run.events_named("configure_failed"), run.events_named("configure_failed")
    assert run.frames > 0 and run.decode_errors == 0


#: a steady link under the target: 15 s to settle, then the minute the issue's check counts
STEADY_PROFILE: tuple[tuple[float, int], ...] = ((0, 1000),)
STEADY_SETTLE_S = 15.0
STEADY_S = STEADY_SETTLE_S + 60.0


@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_a_steady_link_turns_the_bit_rate_around_at_most_once_a_minute(tmp_path: Path) -> None:
    """A steady 1 Mbit/s link for 75 s: after 15 s the applied bit rate changes direction at most once in
    the minute that follows, and uses the link.  Measured 6-13 a minute before the encoder reopened at
    its target at keyframes and a burst over the target stopped counting as a fallen link; 0 in 3 runs
    after (docs/architecture.md "A steady link")."""
    run = run_profile("engine", STEADY_PROFILE, STEADY_S, tmp_path)
    report = run.to_json()
    print(report)
    settled = [(round(t, 1), k) for t, k in run.bitrate if t >= STEADY_SETTLE_S]
    cuts = [e for e in run.events_named("bitrate_changed") if e["data"]["reason"] == "congestion" and e["t"] >= 10]
    assert run.direction_changes(STEADY_SETTLE_S) <= 1, (settled, [(e, run.samples_near(e["t"])) for e in cuts])
    # it uses the link: the applied bit rate + audio over the minute is at least 60% of it on average
    weighted = sum(k * (min(STEADY_S, nxt) - max(STEADY_SETTLE_S, t))
                   for (t, k), (nxt, _) in zip(run.bitrate, [*run.bitrate[1:], (STEADY_S, 0)], strict=True)
                   if nxt > STEADY_SETTLE_S)
    assert weighted / 60.0 + AUDIO_KBPS >= 0.6 * STEADY_PROFILE[0][1], (weighted / 60.0, settled)
    assert run.longest_stall_s <= 1.0 and run.audio_dropped == 0, report


#: fluency_first's resolution steps: 720p source, the link drops to 300 kbit/s and rises again
FLUENCY_PROFILE: tuple[tuple[float, int], ...] = ((0, 4000), (6, 300), (16, 4000))
FLUENCY_S = 36.0


@pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))
def test_fluency_first_steps_the_resolution_down_at_300k_and_back_after_the_rise(tmp_path: Path) -> None:
    run = run_profile("fluency", FLUENCY_PROFILE, FLUENCY_S, tmp_path, width=1280, height=720, fps=15)
    steps = [(round(e["t"], 2), e["data"]["resolution"], e["data"]["reason"], e["data"]["width"], e["data"]["height"])
             for e in run.events_named("resolution_changed")]
    applied = [(round(e["t"], 2), e["data"]["width"], e["data"]["height"], e["data"]["reason"])
               for e in run.events_named("resolution_changed", node="venc")]
    print({"steps": steps, "encoder": applied, **run.to_json()})
    drop, rise = FLUENCY_PROFILE[1][0], FLUENCY_PROFILE[2][0]
    down = [s for s in steps if s[2] == "congestion"]
    up = [s for s in steps if s[2] == "recovered"]
    # down once, within 1.5 s of the drop, to a preset the 300 kbit/s link carries (360p or below)
    assert len(down) == 1 and drop <= down[0][0] <= drop + 1.5 and down[0][4] <= 360, steps
    # back to 720p after the rise (one preset at a time).  Before the rise a step up may only go as far as
    # the 300 kbit/s link carries (the step down can overshoot to 180p while TCP recovers; coming back to
    # 240p on the slow link is right), never above 360p
    assert up and up[-1][1:] == ("720p", "recovered", 1280, 720), steps
    assert all(s[4] <= 360 for s in up if s[0] < rise), steps
    assert any(s[0] >= rise for s in up), steps
    # the encoder applied each step (its own event, reason "set"), ending at the source's size
    assert [(w, h) for _, w, h, _ in applied] == [(s[3], s[4]) for s in steps], (applied, steps)
    # the viewer decoded across every size change, and audio was never dropped
    assert run.frames > 0 and run.decode_errors == 0, run.to_json()
    assert run.audio_dropped == 0 and not run.events_named("configure_failed"), run.to_json()
