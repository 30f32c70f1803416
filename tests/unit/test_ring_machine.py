"""Rings refuse to run on a CPU without x86-64's store order: the slot protocol has no memory
barriers, so on ARM a consumer could see a slot's new sequence number before its data."""

from __future__ import annotations

import os
import platform

import pytest
from mediaengine.runtime.ring import FrameRing, list_segments
from mediaengine.sdk.errors import ResourceError


def test_rings_refuse_to_be_created_or_attached_on_an_arm_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    tag = f"archtest{os.getpid()}"
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    with pytest.raises(ResourceError, match=r"aarch64.*run the engine on x86-64") as info:
        FrameRing.create(f"me-{tag}-out", slot_bytes=64, consumers=1)
    assert info.value.code == 1300
    with pytest.raises(ResourceError, match="aarch64"):
        FrameRing.attach(f"me-{tag}-out")
    assert list_segments(tag) == []


def test_rings_work_on_x86_64() -> None:
    assert platform.machine() in ("x86_64", "AMD64")
    tag = f"archok{os.getpid()}"
    ring = FrameRing.create(f"me-{tag}-out", slot_bytes=64, consumers=1)
    try:
        FrameRing.attach(f"me-{tag}-out").close()
    finally:
        ring.close()
        ring.unlink()
