"""The microphone's pure parts: placing device samples on the engine clock (DriftCorrector), volume, device
names, and the typed error for a device that does not exist (PortAudio, no sound server needed)."""

from __future__ import annotations

import numpy as np
import pytest
from mediaengine.actors._sound import DeviceName, parse_device
from mediaengine.actors.microphone import DriftCorrector, Microphone, apply_volume
from mediaengine.sdk.errors import DeviceNotFoundError, OptionError
from mediaengine.sdk.formats import NS
from mediaengine.testing import ActorHarness

RATE = 48000
LAT = 20_000_000


def feed(dc: DriftCorrector, seconds: float, device_rate: float, jitter_ns: int = 0, seed: int = 0) -> list[int]:
    """Reads every 10 ms of engine time of a device whose clock runs at `device_rate` Hz; a read may come
    up to `jitter_ns` late (a loaded machine).  Returns the start index of every chunk."""
    rng = np.random.default_rng(seed)
    starts, delivered = [], 0
    for k in range(1, round(seconds * 100) + 1):
        now = k * 10_000_000 + (int(rng.integers(0, jitter_ns)) if jitter_ns else 0)
        due = int((now - LAT) * device_rate / NS)  # samples the device has captured by now
        count = due - delivered
        if count <= 0:
            continue
        delivered = due
        start, _ = dc.place(count, now, LAT)
        starts.append(start)
    return starts


def test_an_exact_device_clock_needs_no_correction_even_with_late_reads() -> None:
    dc = DriftCorrector(RATE, tolerance_ms=5.0)
    feed(dc, 60.0, RATE, jitter_ns=30_000_000)
    assert dc.dropped == dc.repeated == dc.resyncs == 0
    assert abs(dc.drift_ms) < 5.0


@pytest.mark.parametrize("ppm", [300, -300])
def test_a_drifting_device_is_kept_within_the_tolerance_over_60_s(ppm: int) -> None:
    dc = DriftCorrector(RATE, tolerance_ms=5.0)
    feed(dc, 60.0, RATE * (1 + ppm * 1e-6), jitter_ns=20_000_000, seed=3)
    assert abs(dc.drift_ms) <= 6.0  # 300 ppm over 60 s would be 18 ms uncorrected
    fixed = dc.dropped if ppm > 0 else dc.repeated
    assert fixed == pytest.approx(60 * RATE * abs(ppm) * 1e-6 - 5 * RATE / 1000, abs=60)
    assert dc.resyncs == 0


def test_samples_lost_in_a_stall_are_a_jump_once_the_window_shows_them() -> None:
    dc = DriftCorrector(RATE, tolerance_ms=5.0)
    first = [dc.place(480, i * 10_000_000 + LAT, LAT)[0] for i in range(1, 101)]  # 1 s of a good device
    start, corr = dc.place(480, 1_300_000_000 + LAT, LAT)  # then 290 ms of its samples were lost
    assert start == first[-1] + 480 and corr == 0 and dc.resyncs == 0  # one late read is not a slow device
    starts = [dc.place(480, 1_300_000_000 + LAT + i * 10_000_000, LAT)[0] for i in range(1, 250)]
    assert dc.resyncs == 1  # once the 2 s window holds only the lagging reads: a jump, not 400 ppm for a minute
    expected_end = (1_300_000_000 + 249 * 10_000_000) * RATE // NS + 1
    assert starts[-1] + 480 == pytest.approx(expected_end, abs=2)
    assert dc.repeated <= 40


def test_volume_and_mute() -> None:
    pcm = np.array([[1000], [-2000]], np.int16)
    assert apply_volume(pcm, 100.0, False) is pcm
    assert apply_volume(pcm, 50.0, False)[:, 0].tolist() == [500, -1000]
    assert not apply_volume(pcm, 100.0, True).any()


def test_device_names() -> None:
    assert parse_device("default") == DeviceName("default")
    assert parse_device("3") == DeviceName("index", "3")
    assert parse_device("pulse:mic.monitor") == DeviceName("pulse", "mic.monitor")
    assert parse_device("USB Audio") == DeviceName("name", "USB Audio")
    with pytest.raises(OptionError, match="pulse: needs a source or sink name"):
        parse_device("pulse:")


def test_a_device_that_does_not_exist_is_a_typed_error_naming_it() -> None:
    with pytest.raises(DeviceNotFoundError, match="no input sound device device 'no such microphone'") as exc:
        ActorHarness(Microphone, {"device": "no such microphone"}, node_id="mic")
    assert exc.value.code == 1320 and "devices:" in str(exc.value)
