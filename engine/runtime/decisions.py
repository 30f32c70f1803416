"""The runtime's decisions as pure functions: lists in, a choice out, no shared memory, no sockets.

The actor runtime and the ring writer call these on their hot paths; the unit tests call them with
plain lists (tests/unit/test_runtime_decisions.py), so every branch of "which frame is dropped",
"which slot is used" and "who is waited for" is tested without a process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ..sdk.actor import Actor, Reply, match_input_pad
from ..sdk.errors import EngineError, FormatChangeError
from ..sdk.formats import Format, VideoFormat
from .wire import Desc, FrameDesc


def keep_newest_raw(batch: Sequence[Desc], policies: Mapping[str, str]) -> list[bool]:
    """Which descriptors of one drained batch to deliver (True) and which to drop as stale (False).

    On a `drop_oldest` pad, of several raw frames (`FrameDesc`) waiting in the batch only the newest
    is delivered: the others are already late.  Packets, ends of stream, format changes, unknown pads
    and the other policies are always kept, in order.
    """
    newest: dict[str, int] = {}
    for i, d in enumerate(batch):
        if isinstance(d, FrameDesc) and policies.get(d.pad) == "drop_oldest":
            newest[d.pad] = i
    return [not (isinstance(d, FrameDesc) and policies.get(d.pad) == "drop_oldest" and newest.get(d.pad) != i)
            for i, d in enumerate(batch)]


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


def check_input_format(cls: type[Actor[Any]], pad: str, fmt: Format, *, where: str | None = None) -> None:
    """Refuse (`FormatChangeError`) a format change on input `pad` that the pad's port does not accept."""
    key = match_input_pad(pad, cls.inputs)
    reason = cls.inputs[key].accepts(fmt) if key is not None else f"no input pad {pad!r}"
    if reason is not None:
        raise FormatChangeError(f"{cls.__name__} cannot take the new format on {pad!r}: {reason}", where=where)


def keep_pix_fmts(formats: Mapping[str, Format], current: Mapping[str, Format]) -> dict[str, Format]:
    """`output_formats()` recomputed mid-stream (after a live `set`, on new inputs, after a restart) does
    not know which pixel format the loader chose for each video edge: keep each output's current one."""
    kept: dict[str, Format] = {}
    for pad, fmt in formats.items():
        now = current.get(pad)
        if isinstance(fmt, VideoFormat) and isinstance(now, VideoFormat) and fmt.pix_fmt != now.pix_fmt:
            fmt = dataclasses.replace(fmt, pix_fmt=now.pix_fmt)
        kept[pad] = fmt
    return kept


def derived_output_changes(cls: type[Actor[Any]], options: Any, inputs: Mapping[str, Format],
                           outputs: Mapping[str, Format], changed: Collection[str], *,
                           where: str | None = None) -> dict[str, Format]:
    """After `on_format_changed`: the outputs the hook did not change itself (`changed`) that follow
    `output_formats()` of the new `inputs` to another format (what a pass-through filter needs).

    A kind whose load-time rules reject the new inputs refuses the change (`FormatChangeError`).
    """
    if cls.is_source or not cls.outputs:
        return {}
    try:
        derived = keep_pix_fmts(cls.output_formats(options, inputs), outputs)
    except EngineError as exc:
        raise FormatChangeError(f"{cls.__name__} cannot take the new input formats: {exc.message}",
                                where=where) from exc
    return {pad: fmt for pad, fmt in derived.items()
            if pad not in changed and pad in outputs and outputs[pad] != fmt}
