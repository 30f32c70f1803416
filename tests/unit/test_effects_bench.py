"""The `effects` benchmark's cases run (on tiny frames), really change the pictures, and take rows from
`tools.bench.effects_compositor` when that module exists."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from mediaengine.sdk.formats import Frame

from tools.bench import effects


def test_every_case_processes_frames_into_its_slots(tmp_path: Path) -> None:
    frames = effects.pictures(160, 90, n=2)
    for case in effects.CASES:
        step = case.make(160, 90, tmp_path / "assets")
        assert effects.time_case(step, frames, 3) > 0, case.name
    slots: list[np.ndarray] = []
    orig = effects._Slots.lend

    def spy(self: effects._Slots, pad: str) -> np.ndarray:
        slots.append(orig(self, pad))
        return slots[-1]

    effects._Slots.lend = spy  # type: ignore[method-assign]
    try:
        step = effects.actor_step(*_mirror())(160, 90, tmp_path)
        step(Frame(frames[0].data, pts_ns=0))
    finally:
        effects._Slots.lend = orig  # type: ignore[method-assign]
    assert (slots[-1] == frames[0].data[:, ::-1]).all()  # the work landed in the lent slot


def _mirror() -> tuple[type, dict[str, object]]:
    from mediaengine.actors.transform import Transform

    return Transform, {"mirror": True}


def test_a_compositor_module_adds_its_cases_and_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = types.ModuleType("tools.bench.effects_compositor")
    extra.CASES = [effects.Case("compositor 2 layers", effects.copy_step)]  # type: ignore[attr-defined]
    extra.TARGETS = [effects.Goal("compositor 2 layers", "1080p", 3.0)]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tools.bench.effects_compositor", extra)
    cases, goals = effects.all_cases()
    assert cases[-1].name == "compositor 2 layers" and goals[-1] == effects.Goal("compositor 2 layers", "1080p", 3.0)
    assert cases[: len(effects.CASES)] == effects.CASES
