"""The closed actor contract: what every actor module may import and use, and the test harness.

`actors/` imports only the actor SDK (`mediaengine.sdk` and its submodules) and its own private helper
modules; hooks have effects only through the actions they return; the runtime hands an actor its
context instead of setting attributes on it.  `ActorHarness` runs one actor in-process the way the
runtime does.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mediaengine
import mediaengine.actors as actors
import numpy as np
import pytest
from mediaengine.sdk.actor import Actions, Actor, Context, Emit, Event, InPort, OutPort, Reply, option
from mediaengine.sdk.errors import ActorFailedError, OptionError, UnknownCommandError
from mediaengine.sdk.formats import Format, Frame, Packet, VideoFormat
from mediaengine.testing import ActorHarness, ManualClock

ACTORS_DIR = Path(actors.__file__).parent
ENGINE_DIR = Path(mediaengine.__file__).parent
ACTOR_FILES = sorted(ACTORS_DIR.glob("*.py"))


def imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append("." * node.level + node.module)
    return names


@pytest.mark.parametrize("path", ACTOR_FILES, ids=lambda p: p.name)
def test_actor_modules_import_only_the_sdk(path: Path) -> None:
    ours = [m for m in imported_modules(path) if m.startswith(("mediaengine", "engine", "actors", "."))]
    allowed = re.compile(r"mediaengine\.sdk(\..+)?|mediaengine\.actors\._[a-z0-9_]+")
    assert [m for m in ours if not allowed.fullmatch(m)] == []


@pytest.mark.parametrize("path", ACTOR_FILES, ids=lambda p: p.name)
def test_actor_modules_use_no_leaking_patterns(path: Path) -> None:
    text = path.read_text()
    for pattern in ("self._pending", "live_options", "option_ranges", "_lend_buffer", "output_formats_",
                    'getattr(actor, "metrics")', "restart_count: int = 0  # set by the runtime"):
        assert pattern not in text, f"{path.name} uses {pattern}"


def test_the_runtime_sets_no_attributes_on_the_actor_and_does_not_import_the_loader() -> None:
    runtime = (ENGINE_DIR / "runtime" / "actor_runtime.py").read_text()
    assert not re.search(r"\bactor\.[A-Za-z_]+\s*=[^=]", runtime)
    assert "getattr(self.actor" not in runtime and "type: ignore[attr-defined]" not in runtime
    assert not [m for m in imported_modules(ENGINE_DIR / "runtime" / "actor_runtime.py") if "loader" in m]


# ---- the harness ---------------------------------------------------------------------------------

FMT = VideoFormat(64, 48, 30.0)


@dataclass(frozen=True)
class StampOptions:
    level: int = option(100, range=(0, 255), live=True, doc="value written into the corner")
    corner: int = option(8, range=(1, 32), doc="size of the corner square")


class Stamp(Actor[StampOptions]):
    """Copies each frame and writes `level` into its top-left corner: a small complete actor."""

    inputs = {"in": InPort("video")}
    outputs = {"out": OutPort("video", default=True)}
    Options = StampOptions

    @classmethod
    def validate(cls, options: Any, input_formats: Any) -> None:
        fmt = input_formats.get("in")
        if isinstance(fmt, VideoFormat) and options.corner > min(fmt.width, fmt.height):
            raise OptionError(f"corner {options.corner} is larger than the {fmt.width}x{fmt.height} frame")

    def setup(self, ctx: Context) -> Actions:
        self.ctx = ctx
        self.frames = 0
        return [Event("ready", {"node": ctx.node_id, "restarts": ctx.restart_count, "t": ctx.clock()})]

    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        assert isinstance(media, Frame)
        out = self.ctx.output_buffer("out")
        if out is None:
            out = np.empty_like(media.data)
        np.copyto(out, media.data)
        c = self.options.corner
        out[:c, :c] = self.options.level
        self.frames += 1
        return [Emit("out", Frame(out, media.pts_ns, media.seq))]

    def on_option_changed(self, name: str, value: Any) -> Actions:
        return [Event("level_changed", {"level": value})]

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "count":
            return [Reply({"frames": self.frames}), Event("counted")]
        if command == "bad":
            return [Event("x")]
        return super().on_control(command, args)

    def on_tick(self, now_ns: int) -> Actions:
        return [Reply("not allowed here")]

    def metrics(self) -> dict[str, Any]:
        return {"frames": self.frames}


def frame(value: int = 7, pts: int = 0) -> Frame:
    return Frame(np.full((48, 64, 3), value, np.uint8), pts)


def test_harness_gives_setup_a_context_and_collects_its_actions() -> None:
    clock = ManualClock(123)
    h = ActorHarness(Stamp, {"level": 200}, input_formats={"in": FMT}, node_id="st", restart_count=2, clock=clock)
    assert [e.data for e in h.events("ready")] == [{"node": "st", "restarts": 2, "t": 123}]
    assert h.output_formats == {"out": FMT}


def test_harness_lends_one_output_buffer_per_hook_call() -> None:
    h = ActorHarness(Stamp, {}, input_formats={"in": FMT})
    for i in range(3):
        h.frame("in", frame(pts=i))
    out = h.emitted("out")
    assert len(out) == 3 and h.zero_copy("out") == 3
    assert isinstance(out[0], Frame) and out[0].data[0, 0, 0] == 100 and out[0].data[20, 20, 0] == 7
    assert not any(np.shares_memory(a.data, b.data) for a, b in itertools.pairwise(out)
                   if isinstance(a, Frame) and isinstance(b, Frame))
    assert ActorHarness(Stamp, {}, input_formats={"in": FMT}, lend_buffers=False).zero_copy("out") == 0


def test_harness_set_goes_through_the_runtimes_checks() -> None:
    h = ActorHarness(Stamp, {}, input_formats={"in": FMT})
    assert h.set(level=5) == {"level": 5}
    assert [e.data for e in h.events("level_changed")] == [{"level": 5}]
    h.frame("in", frame())
    last = h.emitted("out")[-1]
    assert isinstance(last, Frame) and last.data[0, 0, 0] == 5
    with pytest.raises(OptionError) as info:
        h.set(level=300)
    assert info.value.code == 1108 and str(info.value) == "node.level: 300 is out of range 0..255"
    with pytest.raises(OptionError, match="cannot change while running; live options: level"):
        h.set(corner=4)


def test_harness_validates_options_like_the_loader() -> None:
    with pytest.raises(OptionError, match=r"corner: 40 is out of range 1\.\.32"):
        ActorHarness(Stamp, {"corner": 40}, input_formats={"in": FMT})
    with pytest.raises(OptionError, match="larger than the 16x16 frame"):
        ActorHarness(Stamp, {"corner": 20}, input_formats={"in": VideoFormat(16, 16, 30.0)})
    with pytest.raises(OptionError, match="unknown option for kind Stamp; did you mean 'level'"):
        ActorHarness(Stamp, {"levle": 1}, input_formats={"in": FMT})


def test_harness_control_returns_the_reply_and_keeps_the_other_actions() -> None:
    h = ActorHarness(Stamp, {}, input_formats={"in": FMT})
    h.frame("in", frame())
    assert h.control("count") == {"frames": 1}
    assert h.control("bad") is None and h.replies == [{"frames": 1}, None]
    assert [e.name for e in h.events()][-2:] == ["counted", "x"]
    with pytest.raises(UnknownCommandError):
        h.control("explode")
    assert h.metrics() == {"frames": 1}


def test_a_reply_outside_on_control_fails_the_actor() -> None:
    h = ActorHarness(Stamp, {}, input_formats={"in": FMT})
    with pytest.raises(ActorFailedError, match="Reply is only allowed from on_control, not the tick hook"):
        h.tick(0)


def test_a_frame_that_does_not_match_the_pad_format_fails_the_actor() -> None:
    class Wrong(Stamp):
        def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
            return [Emit("out", Frame(np.zeros((2, 2, 3), np.uint8), 0))]

    h = ActorHarness(Wrong, {}, input_formats={"in": FMT})
    with pytest.raises(ActorFailedError, match=r"out: frame \(2, 2, 3\) uint8 does not match video rgb24 64x48"):
        h.frame("in", frame())


def test_output_formats_of_the_example_pass_the_input_through() -> None:
    fmts: dict[str, Format] = Stamp.output_formats(Stamp.Options(), {"in": FMT})
    assert fmts == {"out": FMT}
