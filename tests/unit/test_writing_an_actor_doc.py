"""docs/writing-an-actor.md stays true: its Python blocks form a module whose tests are run here."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-an-actor.md"
MODULE = "writing_an_actor_example"


@pytest.fixture(scope="module")
def example() -> Iterator[types.ModuleType]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 4, "the walk-through lost its code"
    module = types.ModuleType(MODULE)
    sys.modules[MODULE] = module  # dataclasses and get_type_hints look the module up by name
    try:
        exec(compile("\n".join(blocks), str(DOC), "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[MODULE]


def test_the_documented_actor_declares_its_options_once(example: types.ModuleType) -> None:
    from mediaengine.topology.registry import check_kind, option_table

    check_kind("brightness", example.Brightness)
    table = {e["name"]: e for e in option_table(example.Brightness)}
    assert table["gain"]["live"] and table["gain"]["range"] == [0.0, 4.0] and table["gain"]["doc"]


@pytest.mark.parametrize("name", ["test_apply_gain_saturates", "test_brightness_scales_frames_and_answers_commands",
                                  "test_brightness_options_are_checked_like_the_loader_does",
                                  "test_brightness_follows_a_new_frame_size_without_code_of_its_own"])
def test_the_documented_tests_pass(example: types.ModuleType, name: str) -> None:
    getattr(example, name)()
