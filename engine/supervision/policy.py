"""Restart decisions, in the vocabulary of Erlang/OTP supervisors, as pure functions of time.

- restart type per node: `permanent` (always restarted), `transient` (restarted only after an
  abnormal exit), `temporary` (never restarted);
- strategy per group: `one_for_one` (only the failed node), `one_for_all` (every member),
  `rest_for_one` (the failed node and the members after it, in start order);
- intensity: more than `intensity` restarts within `period_s` and the supervisor gives up;
- backoff: the first restart is immediate, repeated failures before a node has been `stable_s`
  up wait exponentially longer (capped).

Nothing here reads a clock: callers pass `now_ns`, so tests run without sleeping.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import TypeVar, assert_never

from ..sdk.errors import SupervisionError
from ..sdk.formats import NS

E = TypeVar("E", bound=enum.StrEnum)


class Restart(enum.StrEnum):
    """A node's restart type (OTP): when the supervisor brings it back."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit
    TEMPORARY = "temporary"  # never


class Strategy(enum.StrEnum):
    """A group's restart strategy (OTP): who else goes down and comes back with a failed member."""

    ONE_FOR_ONE = "one_for_one"  # only the failed node
    ONE_FOR_ALL = "one_for_all"  # every member
    REST_FOR_ONE = "rest_for_one"  # the failed node and the members started after it


def _member(cls: type[E], value: str, what: str) -> E:
    """`value` as a member of `cls`; anything else is a SupervisionError naming the choices."""
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise SupervisionError(f"unknown {what} {value!r}; one of {choices}") from None


def should_restart(restart: Restart | str, abnormal: bool) -> bool:
    kind = _member(Restart, restart, "restart type")
    if kind is Restart.PERMANENT:
        return True
    if kind is Restart.TRANSIENT:
        return abnormal
    if kind is Restart.TEMPORARY:
        return False
    assert_never(kind)


def affected_members(strategy: Strategy | str, members: list[str], failed: str) -> list[str]:
    """The nodes to restart when `failed` dies, in start order (`members` is in start order)."""
    kind = _member(Strategy, strategy, "strategy")
    if kind is Strategy.ONE_FOR_ALL:
        return list(members)
    if kind is Strategy.REST_FOR_ONE:
        return members[members.index(failed):]
    if kind is Strategy.ONE_FOR_ONE:
        return [failed]
    assert_never(kind)


@dataclass
class IntensityTracker:
    """Counts restarts in a sliding window of `period_s`; `record` says whether the limit is exceeded."""

    intensity: int
    period_s: float
    times: deque[int] = field(default_factory=deque)

    def record(self, now_ns: int) -> bool:
        self.times.append(now_ns)
        horizon = now_ns - int(self.period_s * NS)
        while self.times and self.times[0] <= horizon:
            self.times.popleft()
        return len(self.times) > self.intensity

    @property
    def count(self) -> int:
        return len(self.times)


@dataclass
class Backoff:
    """Delay before restart number `failures` (1-based) of a node that has not become stable."""

    initial_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0

    def delay_ns(self, failures: int) -> int:
        if failures <= 1:
            return 0
        base = self.initial_s if self.initial_s > 0 else 0.1
        return int(min(self.max_s, base * self.factor ** (failures - 2)) * NS)


@dataclass
class StabilityTracker:
    """Consecutive failures of one node; reset once it has run `stable_s` with heartbeats."""

    stable_s: float
    failures: int = 0
    started_ns: int | None = None
    stable: bool = False

    def started(self, now_ns: int) -> None:
        self.started_ns = now_ns
        self.stable = False

    def heartbeat(self, now_ns: int) -> bool:
        """True exactly when the node has just become stable."""
        if self.stable or self.started_ns is None:
            return False
        if now_ns - self.started_ns >= int(self.stable_s * NS):
            self.stable = True
            self.failures = 0
            return True
        return False

    def failed(self) -> int:
        self.failures += 1
        self.started_ns = None
        return self.failures


def when_group_exhausted(group_restart: str) -> str:
    """What a group does once its own intensity is exceeded, as an OTP child supervisor would.

    A group is a supervisor of its own: its members' restarts count against its intensity only.
    Beyond it the group exits; its parent (the engine) then treats it as one child:
    - `"give_up"` for a `temporary` group: its members stop, the engine runs on, nothing counts upstream;
    - `"escalate"` otherwise: the group restarts as a whole, and that counts as one restart against the
      engine's intensity (so a group that keeps exhausting itself still stops the engine in the end).
    """
    return "give_up" if group_restart == "temporary" else "escalate"
