"""The runtime's decisions as pure functions (mediaengine.runtime.decisions) and `set` (apply_set).

These are what the actor runtime and the ring writer decide on their hot paths: which waiting frame is
dropped, which slot is written next, who is waited for, whether a lent buffer is published, where a
reply goes, and what `set` accepts.  Plain lists in, a choice out.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from mediaengine.runtime.decisions import (
    full_consumers,
    keep_newest_raw,
    lent_buffer_fate,
    next_free_slot,
    still_stalled,
    take_reply,
)
from mediaengine.runtime.wire import EosDesc, FormatDesc, FrameDesc, PacketDesc
from mediaengine.sdk.actor import Emit, Event, Reply, option
from mediaengine.sdk.errors import OptionError
from mediaengine.sdk.formats import Frame, Packet, VideoFormat
from mediaengine.sdk.options import apply_set

# ---- batching of drop_oldest --------------------------------------------------------------------

POLICIES = {"v": "drop_oldest", "b": "block", "n": "drop_newest"}


def raw(pad: str, slot: int) -> FrameDesc:
    return FrameDesc(pad, slot, slot + 1, 0, {})


def test_drop_oldest_keeps_only_the_newest_raw_frame_of_a_batch() -> None:
    batch = [raw("v", 0), raw("v", 1), raw("b", 0), raw("v", 2), raw("b", 1)]
    assert keep_newest_raw(batch, POLICIES) == [False, False, True, True, True]


def test_packets_ends_and_other_policies_are_never_dropped_from_a_batch() -> None:
    packet = Packet(b"\x00", pts=0, dts=0, time_base=Fraction(1, 1000), keyframe=True)
    batch = [PacketDesc("v", packet), raw("v", 0), EosDesc("v"), raw("n", 0), raw("n", 1),
             raw("unknown", 1), FormatDesc("v", VideoFormat(64, 48, 30.0)), raw("v", 1)]
    assert keep_newest_raw(batch, POLICIES) == [True, False, True, True, True, True, True, True]


def test_a_single_frame_per_pad_is_delivered() -> None:
    assert keep_newest_raw([raw("v", 3)], POLICIES) == [True]
    assert keep_newest_raw([], POLICIES) == []


# ---- slot reservation ---------------------------------------------------------------------------

def test_next_slot_is_the_first_free_one_after_the_last_used() -> None:
    assert next_free_slot([False, False, False, False], last_slot=1) == 2
    assert next_free_slot([False, False, True, True], last_slot=1) == 0  # wraps around
    assert next_free_slot([True, False, True, True], last_slot=3) == 1
    assert next_free_slot([False, True, True, True], last_slot=0) == 0  # the last one, if it is all there is


def test_no_free_slot_is_none() -> None:
    assert next_free_slot([True, True, True], last_slot=0) is None


# ---- back-pressure ------------------------------------------------------------------------------

def test_full_consumers_are_dropped_or_waited_for_by_policy() -> None:
    held = [4, 1, 4, 4]
    policies = ["drop_oldest", "block", "block", "drop_newest"]
    assert full_consumers(held, 4, policies) == ([0, 1, 2, 3], [0, 3], [2])


def test_excluded_consumers_get_nothing_and_are_not_waited_for() -> None:
    assert full_consumers([4, 4], 4, ["block", "block"], exclude={0}) == ([1], [], [1])
    assert full_consumers([0, 0], 4, ["block", "block"], exclude={0, 1}) == ([], [], [])


def test_a_stalled_consumer_stays_skipped_until_it_releases_a_frame() -> None:
    assert still_stalled({0, 2}, held=[4, 4, 3], depth=4) == {0}
    assert still_stalled(set(), held=[4], depth=4) == set()


# ---- lent buffers and replies -------------------------------------------------------------------

def test_a_lent_buffer_is_published_only_when_it_is_the_emitted_array() -> None:
    lent, other = np.zeros(4), np.zeros(4)
    assert lent_buffer_fate(lent, lent) == "commit"
    assert lent_buffer_fate(lent, other) == "abandon"
    assert lent_buffer_fate(None, other) == "copy"


def test_reply_is_taken_out_of_a_control_hooks_actions() -> None:
    ev = Event("x")
    rest, value, misplaced = take_reply([ev, Reply({"ok": 1})], replying=True)
    assert rest == [ev] and value == {"ok": 1} and not misplaced


def test_reply_outside_on_control_is_flagged() -> None:
    emit = Emit("out", Frame(np.zeros((2, 2, 3), np.uint8), 0))
    rest, value, misplaced = take_reply([emit, Reply(1)], replying=False)
    assert rest == [emit] and value == 1 and misplaced
    assert take_reply([], replying=False) == ([], None, False)


# ---- set -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Opts:
    gain: float = option(1.0, range=(0.0, 4.0), live=True, doc="gain")
    mode: str = option("a", choices=("a", "b"), live=True, doc="mode")
    rate: int = option(48000, doc="not live")


def test_set_coerces_and_returns_new_frozen_options() -> None:
    before = Opts()
    after, changed = apply_set(Opts, before, {"gain": 2, "mode": "b"}, node_id="mix")
    assert after == Opts(gain=2.0, mode="b") and changed == {"gain": 2.0, "mode": "b"}
    assert before == Opts()  # the old instance is untouched


@pytest.mark.parametrize(("changes", "where", "message"), [
    ({"gian": 1.0}, "mix.gian", "unknown option 'gian'; options changeable while running: gain, mode"),
    ({"rate": 44100}, "mix.rate", "option 'rate' cannot change while running; live options: gain, mode"),
    ({"gain": "loud"}, "mix.gain", "expected <class 'float'>, got 'loud'"),
    ({"gain": 5}, "mix.gain", "5 is out of range 0..4"),
    ({"mode": "c"}, "mix.mode", "'c' is not one of 'a', 'b'"),
])
def test_set_refuses_with_code_1108_naming_the_option(changes: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(OptionError) as info:
        apply_set(Opts, Opts(), changes, node_id="mix")
    assert info.value.code == 1108 and info.value.where == where and info.value.message == message


def test_set_runs_the_cross_option_rules_on_the_new_options() -> None:
    def validate(o: Any) -> None:
        if o.mode == "b" and o.gain > 2:
            raise OptionError("mode b takes gain <= 2")

    apply_set(Opts, Opts(), {"gain": 3.0}, node_id="mix", validate=validate)
    with pytest.raises(OptionError, match="mode b takes gain <= 2") as info:
        apply_set(Opts, Opts(gain=3.0), {"mode": "b"}, node_id="mix", validate=validate)
    assert info.value.where == "mix.mode"
    with pytest.raises(OptionError) as info:
        apply_set(Opts, Opts(), {"mode": "b", "gain": 3.0}, node_id="mix", validate=validate)
    assert info.value.where == "mix"  # several changed: the node, not a guess


def test_recomputed_output_formats_keep_the_edges_negotiated_pixel_format() -> None:
    # a camera's live `set` recomputes output_formats(), which says rgb24; the loader chose yuv420p for
    # the edge (its consumer is the encoder): the runtime must check and keep yuv420p, not rgb24
    from mediaengine.runtime.decisions import keep_pix_fmts
    from mediaengine.sdk.formats import AudioFormat, VideoFormat

    recomputed = {"out": VideoFormat(640, 360, 30.0), "audio": AudioFormat(48000, 2)}
    current = {"out": VideoFormat(640, 360, 30.0, pix_fmt="yuv420p"), "audio": AudioFormat(48000, 2)}
    kept = keep_pix_fmts(recomputed, current)
    assert kept["out"] == VideoFormat(640, 360, 30.0, pix_fmt="yuv420p")
    assert kept["audio"] == recomputed["audio"]
    assert keep_pix_fmts({"out": VideoFormat(1280, 720, 30.0)}, {}) == {"out": VideoFormat(1280, 720, 30.0)}
