"""The runtime's decisions as pure functions: lists in, a choice out, no shared memory, no sockets.

The actor runtime and the ring writer call these on their hot paths; the unit tests call them with
plain lists (tests/unit/test_runtime_decisions.py), so every branch of "which frame is dropped",
"which slot is used" and "who is waited for" is tested without a process.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ..sdk.actor import Reply


def keep_newest_raw(batch: Sequence[Mapping[str, Any]], policies: Mapping[str, str]) -> list[bool]:
    """Which descriptors of one drained batch to deliver (True) and which to drop as stale (False).

    On a `drop_oldest` pad, of several raw frames (descriptors with a slot `s`) waiting in the
    batch only the newest is delivered: the others are already late.  Packets (`k`), ends of
    stream (`e`), unknown pads and the other policies are always kept, in order.
    """
    newest: dict[str, int] = {}
    for i, d in enumerate(batch):
        pad = d.get("p")
        if isinstance(pad, str) and policies.get(pad) == "drop_oldest" and "s" in d:
            newest[pad] = i
    keep = []
    for i, d in enumerate(batch):
        pad = d.get("p")
        stale = (isinstance(pad, str) and policies.get(pad) == "drop_oldest" and "s" in d
                 and newest.get(pad) != i)
        keep.append(not stale)
    return keep


def next_free_slot(busy: Sequence[bool], last_slot: int) -> int | None:
    """The slot a producer writes next: the first one not held by any consumer, round-robin after
    `last_slot` (so a consumer still reading a recent slot is not overwritten); None if all are busy."""
    n = len(busy)
    for k in range(1, n + 1):
        slot = (last_slot + k) % n
        if not busy[slot]:
            return slot
    return None


def full_consumers(held: Sequence[int], depth: int, policies: Sequence[str],
                   exclude: Collection[int] = ()) -> tuple[list[int], list[int], list[int]]:
    """Back-pressure on one write: (wanted, dropped, waiting) consumer indices.

    `wanted` are the consumers that should get the frame (all but `exclude`); of those, a consumer
    holding `depth` frames is full: with `drop_oldest`/`drop_newest` it misses this frame
    (`dropped`), with `block` the producer waits for it (`waiting`, up to its block timeout).
    """
    wanted = [c for c in range(len(held)) if c not in exclude]
    full = [c for c in wanted if held[c] >= depth]
    dropped = [c for c in full if policies[c] != "block"]
    waiting = [c for c in full if policies[c] == "block"]
    return wanted, dropped, waiting


def still_stalled(stalled: Collection[int], held: Sequence[int], depth: int) -> set[int]:
    """Block-policy consumers that timed out stay skipped until they release something.

    A consumer that timed out is probably restarting: waiting the whole block timeout on it for
    every frame would stall the producer, so it is excluded until it holds fewer than `depth`.
    """
    return {c for c in stalled if held[c] >= depth}


def lent_buffer_fate(lent: object | None, emitted: object) -> str:
    """What happens to a slot lent by `output_buffer()` when a frame is emitted on its pad.

    "commit": the frame is the lent array itself (rendered in place): publish the slot, no copy;
    "abandon": a slot was lent but the actor emitted another array: the slot goes back to the ring
    and that array is copied in; "copy": nothing was lent: copy the frame into a free slot.
    """
    if lent is None:
        return "copy"
    return "commit" if emitted is lent else "abandon"


def take_reply(actions: Sequence[Any], *, replying: bool) -> tuple[list[Any], Any, bool]:
    """Split a hook's actions into (the other actions in order, the reply value, whether misplaced).

    `Reply` answers the control command being handled, so it is allowed only from `on_control`
    (`replying`); elsewhere the third value is True and the caller fails the actor.  The last
    `Reply` wins.
    """
    rest: list[Any] = []
    reply: Any = None
    misplaced = False
    for action in actions:
        if isinstance(action, Reply):
            misplaced = misplaced or not replying
            reply = action.value
        else:
            rest.append(action)
    return rest, reply, misplaced
