"""Supervisor decisions (restart types, strategies, intensity, backoff) with an injected clock."""

from __future__ import annotations

import pytest
from mediaengine.supervision.policy import (
    NS,
    Backoff,
    IntensityTracker,
    StabilityTracker,
    affected_members,
    should_restart,
    when_group_exhausted,
)


@pytest.mark.parametrize(
    ("restart", "abnormal", "expected"),
    [
        ("permanent", True, True),
        ("permanent", False, True),
        ("transient", True, True),
        ("transient", False, False),
        ("temporary", True, False),
        ("temporary", False, False),
    ],
)
def test_restart_types(restart: str, abnormal: bool, expected: bool) -> None:
    assert should_restart(restart, abnormal) is expected


def test_strategies_pick_members_in_start_order() -> None:
    members = ["src", "filt", "enc", "rec"]
    assert affected_members("one_for_one", members, "enc") == ["enc"]
    assert affected_members("one_for_all", members, "enc") == members
    assert affected_members("rest_for_one", members, "filt") == ["filt", "enc", "rec"]
    assert affected_members("rest_for_one", members, "rec") == ["rec"]


def test_intensity_counts_within_the_period_only() -> None:
    t = IntensityTracker(intensity=3, period_s=10.0)
    assert [t.record(i * NS) for i in range(3)] == [False, False, False]
    assert t.record(3 * NS) is True  # 4 restarts within 10 s
    # far later, the window has slid past the earlier restarts
    t2 = IntensityTracker(intensity=3, period_s=10.0)
    for i in range(3):
        t2.record(i * NS)
    assert t2.record(20 * NS) is False
    assert t2.count == 1


def test_intensity_zero_gives_up_at_first_restart() -> None:
    assert IntensityTracker(intensity=0, period_s=5.0).record(0) is True


def test_backoff_first_restart_immediate_then_exponential_and_capped() -> None:
    b = Backoff(initial_s=0.1, max_s=1.0)
    delays = [b.delay_ns(n) / NS for n in range(1, 8)]
    assert delays[0] == 0
    assert delays[1:5] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert delays[5:] == [1.0, 1.0]


def test_stability_resets_failures_after_stable_period() -> None:
    s = StabilityTracker(stable_s=2.0)
    s.started(0)
    assert s.failed() == 1
    s.started(1 * NS)
    assert s.failed() == 2  # died again before being stable
    s.started(5 * NS)
    assert s.heartbeat(6 * NS) is False
    assert s.heartbeat(7 * NS) is True  # 2 s up: stable, failures forgotten
    assert s.heartbeat(8 * NS) is False  # reported once
    assert s.failed() == 1


def test_restart_types_and_strategies_are_enums_with_an_explicit_default() -> None:
    from mediaengine.sdk.errors import SupervisionError
    from mediaengine.supervision.policy import Restart, Strategy

    assert should_restart(Restart.TRANSIENT, abnormal=True) and not should_restart("transient", abnormal=False)
    assert affected_members(Strategy.REST_FOR_ONE, ["a", "b", "c"], "b") == ["b", "c"]
    with pytest.raises(SupervisionError, match="unknown restart type 'sometimes'; one of permanent"):
        should_restart("sometimes", abnormal=True)
    with pytest.raises(SupervisionError, match="unknown strategy 'all_for_none'"):
        affected_members("all_for_none", ["a"], "a")
def test_a_group_beyond_its_intensity_gives_up_alone_only_when_temporary() -> None:
    assert when_group_exhausted("temporary") == "give_up"
    assert when_group_exhausted("permanent") == "escalate"
