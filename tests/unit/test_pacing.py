"""Which frames a source emits at a given engine time: catch up a little, jump after a long stall."""

from __future__ import annotations

from mediaengine.sdk.pacing import MAX_CATCHUP_FRAMES, NS, audio_frames_due, video_indices_due

IV = NS // 30


def test_video_first_frame_is_the_current_index() -> None:
    assert video_indices_due(None, 10 * IV + 5, IV) == [10]


def test_video_catches_up_a_few_missed_frames_and_jumps_after_many() -> None:
    assert video_indices_due(11, 11 * IV, IV) == [11]
    assert video_indices_due(11, 10 * IV, IV) == []  # nothing due yet
    assert video_indices_due(11, 14 * IV, IV) == [11, 12, 13, 14]
    late = 11 + MAX_CATCHUP_FRAMES + 1
    assert video_indices_due(11, late * IV, IV) == [late]  # e.g. after a restart: a visible jump


def test_audio_frames_follow_the_sample_clock() -> None:
    rate, spf = 48000, 1024
    start = -(-5 * spf * NS // rate)  # the first nanosecond of frame 5
    assert audio_frames_due(None, start, rate, spf) == [5]
    assert audio_frames_due(6, start, rate, spf) == []
    assert audio_frames_due(6, start + 3 * spf * NS // rate + 1, rate, spf) == [6, 7, 8]
    assert audio_frames_due(6, start + 10 * NS, rate, spf)[0] > 400  # more than 0.5 s behind: jump
