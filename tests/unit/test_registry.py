"""The actor registry: kind names, lazy imports, clear errors, descriptions, and the real actor modules.

The real-actor checks are parametrized over whatever modules `actors/` holds when the tests are
collected, so they grow with the package; `test_all_kinds_matches_kind_names` runs in every case.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import mediaengine.actors as actors
import numpy as np
import pytest
from mediaengine.sdk.actor import Actor, InPort, OutPort, coerce, option, option_fields, resolved_hints
from mediaengine.sdk.errors import EngineError, UnknownKindError
from mediaengine.sdk.formats import AudioFormat, EncodedFormat, Format, VideoFormat
from mediaengine.sdk.options import META_KEY
from mediaengine.topology import registry as _registry

ACTORS_DIR = Path(actors.__file__).parent
REAL_KINDS = sorted([p.stem for p in ACTORS_DIR.glob("*.py") if not p.name.startswith("_")]
                    + [p.parent.name for p in ACTORS_DIR.glob("*/__init__.py") if not p.parent.name.startswith("_")])


# ---- the real actor modules ----------------------------------------------------------------------

def test_kind_names_lists_modules_without_importing_them() -> None:
    code = ("import sys; from mediaengine.topology.registry import kind_names; names = kind_names(); "
            "print(sorted(names)); print(sorted(m for m in sys.modules if m.startswith('mediaengine.actors.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ACTORS_DIR.parent, timeout=60).stdout.splitlines()
    assert out == [repr(REAL_KINDS), "[]"]


def test_all_kinds_matches_kind_names() -> None:
    kinds = _registry.all_kinds()
    assert sorted(kinds) == _registry.kind_names()
    assert set(REAL_KINDS) <= set(kinds)
    for name, cls in kinds.items():
        assert issubclass(cls, Actor) and cls is _registry.get_kind(name)


def _sample_format(port: InPort) -> Format:
    if port.kind == "video":
        return VideoFormat(640, 360, 30.0, port.pix_fmts[0] if port.pix_fmts else "rgb24")
    if port.kind == "audio":
        return AudioFormat(48000, 1)
    return EncodedFormat(port.codecs[0] if port.codecs else "h264")


@pytest.mark.parametrize("name", REAL_KINDS)
def test_real_kind_declares_ports_and_options(name: str) -> None:
    cls = _registry.get_kind(name)
    assert cls.__module__ == f"mediaengine.actors.{name}"
    assert cls.inputs or cls.outputs, "an actor needs at least one pad"
    assert all(isinstance(p, InPort) for p in cls.inputs.values())
    assert all(isinstance(p, OutPort) for p in cls.outputs.values())
    if cls.outputs:
        assert cls.default_output() in cls.outputs
    assert dataclasses.is_dataclass(cls.Options)
    hints = resolved_hints(cls.Options)
    fields = option_fields(cls.Options)
    for fname, f in fields.items():
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if f.init and default is not dataclasses.MISSING:
            ok, _ = coerce(default, hints[fname])
            assert ok, f"default {default!r} of option {fname!r} does not match its type {hints[fname]}"
    undeclared = [n for n, f in fields.items() if META_KEY not in f.metadata or not f.metadata[META_KEY].doc]
    assert not undeclared, f"options not declared with option(..., doc=...): {undeclared}"
    description = _registry.describe_kind(name)
    json.dumps(description)  # the CLI prints it as JSON
    assert [o["name"] for o in description["options"]] == [n for n, f in fields.items() if f.init]


def _required_option_values(name: str, tmp_path: Path) -> dict[str, Any]:
    """Sample values for the options some kinds require (no default): a URL, a real image, an output file."""
    image = tmp_path / "sample.png"
    assert cv2.imwrite(str(image), np.full((90, 160, 3), 128, np.uint8))
    path = {"image_source": str(image), "recorder": str(tmp_path / "out.mp4")}.get(name, str(tmp_path / "out.png"))
    return {"url": "rtmp://127.0.0.1:1935/live/sample", "path": path}


@pytest.mark.parametrize("name", REAL_KINDS)
def test_real_kind_computes_output_formats(name: str, tmp_path: Path) -> None:
    """With default options (and a sample value for each required one) and typical inputs, every output gets
    a format of its port's kind; a sink computes none.  No kind is skipped: a new kind with a required
    option fails here until `_required_option_values` knows a sample value for it."""
    cls = _registry.get_kind(name)
    samples = _required_option_values(name, tmp_path)
    required = [n for n, f in option_fields(cls.Options).items()
                if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in samples]
    assert not missing, f"{name}: add a sample value for required option(s) {missing} to _required_option_values"
    options = cls.Options(**{n: samples[n] for n in required})
    inputs: dict[str, Format] = {pad: _sample_format(port) for pad, port in cls.inputs.items()
                                 if "%" not in pad}
    formats = cls.output_formats(options, inputs)
    assert set(formats) == set(cls.outputs), f"{name}: formats for {sorted(formats)}, outputs {sorted(cls.outputs)}"
    for pad, port in cls.outputs.items():
        assert formats[pad].kind == port.kind, (pad, formats[pad], port.kind)


# ---- mechanics, with temporary modules in the actors package -------------------------------------

@pytest.fixture
def extra_actors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory added to the `actors` package path; its modules are forgotten afterwards."""
    monkeypatch.setattr(actors, "__path__", [*actors.__path__, str(tmp_path)])
    monkeypatch.setattr(_registry, "_loaded", {})
    before = set(sys.modules)
    try:
        yield tmp_path
    finally:
        for mod in set(sys.modules) - before:
            if mod.startswith("mediaengine.actors."):
                del sys.modules[mod]


GOOD = '''
"""A fake kind."""
from dataclasses import dataclass
from mediaengine.sdk.actor import Actor, OutPort, option

@dataclass(frozen=True)
class Opts:
    rate: int = option(5, doc="ticks per second")

class Zed(Actor[Opts]):
    """Ticks."""
    outputs = {"out": OutPort("audio")}
    Options = Opts
'''


def test_lazy_import_of_a_module_kind(extra_actors: Path) -> None:
    (extra_actors / "zz_good.py").write_text(GOOD)
    assert "zz_good" in _registry.kind_names()
    assert "mediaengine.actors.zz_good" not in sys.modules
    cls = _registry.get_kind("zz_good")
    assert cls.__name__ == "Zed" and "mediaengine.actors.zz_good" in sys.modules
    assert _registry.describe_kind("zz_good")["options"] == [
        {"name": "rate", "type": "int", "required": False, "default": 5, "live": False,
         "doc": "ticks per second"}]


def test_module_that_fails_to_import(extra_actors: Path) -> None:
    (extra_actors / "zz_broken.py").write_text("import no_such_dependency_xyz\n")
    with pytest.raises(UnknownKindError) as info:
        _registry.get_kind("zz_broken")
    msg = str(info.value)
    assert "importing mediaengine.actors.zz_broken failed" in msg and "no_such_dependency_xyz" in msg
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_module_with_syntax_error(extra_actors: Path) -> None:
    (extra_actors / "zz_syntax.py").write_text("def broken(:\n")
    with pytest.raises(UnknownKindError, match=r"importing mediaengine\.actors\.zz_syntax failed with SyntaxError"):
        _registry.get_kind("zz_syntax")


def test_module_without_exactly_one_actor(extra_actors: Path) -> None:
    (extra_actors / "zz_none.py").write_text("X = 1\n")
    (extra_actors / "zz_two.py").write_text(GOOD + "\nclass Other(Zed):\n    pass\n")
    with pytest.raises(UnknownKindError, match=r"exactly one public Actor subclass \(found: none\)"):
        _registry.get_kind("zz_none")
    with pytest.raises(UnknownKindError, match=r"found: Other, Zed"):
        _registry.get_kind("zz_two")


def test_module_with_malformed_declarations(extra_actors: Path) -> None:
    (extra_actors / "zz_bad.py").write_text(GOOD.replace('OutPort("audio")', '"audio"'))
    with pytest.raises(UnknownKindError, match=r"malformed: `outputs\['out'\]` must be a OutPort"):
        _registry.get_kind("zz_bad")


def test_unknown_kind_suggests_and_lists() -> None:
    with pytest.raises(UnknownKindError) as info:
        _registry.get_kind("zzz_nothing_like_it")
    assert "known kinds: " + ", ".join(_registry.kind_names()) in str(info.value)
    if REAL_KINDS:
        typo = REAL_KINDS[0][:-1] + "x"
        with pytest.raises(UnknownKindError, match=f"did you mean {REAL_KINDS[0]!r}"):
            _registry.get_kind(typo)


# ---- register / describe -------------------------------------------------------------------------

@dataclass(frozen=True)
class DocOptions:
    strength: int = option(50, range=(0.0, 100.0), live=True, doc="how strong (0..100)")
    name: str = option("x", doc="a label")
    gains: tuple[float, ...] = option(factory=lambda: (1.0, 0.5), doc="per-input gains")
    path: str | None = None  # a plain field: no declaration, so no doc


class DocKind(Actor[DocOptions]):
    """Mixes things.

    More text that is not the summary.
    """

    inputs = {"in": InPort("video", policy="drop_newest"),
              "aux": InPort("encoded", codecs=("h264",), required=False)}
    outputs = {"main": OutPort("video"), "thumb": OutPort("video", default=True)}
    Options = DocOptions


def test_register_describe_unregister() -> None:
    _registry.register("t_doc", DocKind)
    try:
        assert "t_doc" in _registry.kind_names()
        d = _registry.describe_kind("t_doc")
    finally:
        _registry.unregister("t_doc")
    assert "t_doc" not in _registry.kind_names()
    assert d["summary"] == "Mixes things." and d["is_source"] is False
    assert d["inputs"] == {
        "in": {"kind": "video", "codecs": [], "pix_fmts": ["rgb24"], "policy": "drop_newest",
               "required": True},
        "aux": {"kind": "encoded", "codecs": ["h264"], "pix_fmts": [], "policy": "drop_oldest",
                "required": False}}
    assert d["outputs"] == {"main": {"kind": "video", "default": False},
                            "thumb": {"kind": "video", "default": True}}
    assert d["options"] == [
        {"name": "strength", "type": "int", "required": False, "default": 50, "live": True,
         "range": [0.0, 100.0], "doc": "how strong (0..100)"},
        {"name": "name", "type": "str", "required": False, "default": "x", "live": False, "doc": "a label"},
        {"name": "gains", "type": "list of float", "required": False, "default": [1.0, 0.5], "live": False,
         "doc": "per-input gains"},
        {"name": "path", "type": "str | null", "required": False, "default": None, "live": False, "doc": ""}]


def test_register_rejects_bad_names_and_classes() -> None:
    with pytest.raises(ValueError, match="must match"):
        _registry.register("Bad-Name", DocKind)

    class NotDataclassOptions(Actor[Any]):
        outputs = {"out": OutPort("video")}
        Options = dict

    with pytest.raises(UnknownKindError, match="`Options` must be a dataclass"):
        _registry.register("t_nodc", NotDataclassOptions)

    @dataclass(frozen=True)
    class BadDefaultOptions:
        strength: int = option(500, range=(0, 100), doc="how strong")

    class BadDefault(Actor[BadDefaultOptions]):
        outputs = {"out": OutPort("video")}
        Options = BadDefaultOptions

    with pytest.raises(UnknownKindError, match="default of option 'strength' breaks its own declaration: "
                                               r"500 is out of range 0\.\.100"):
        _registry.register("t_badlive", BadDefault)
    assert "t_nodc" not in _registry.kind_names() and "t_badlive" not in _registry.kind_names()


def test_registered_kind_takes_precedence_over_a_module(extra_actors: Path) -> None:
    (extra_actors / "zz_good.py").write_text(GOOD)
    _registry.register("zz_good", DocKind)
    try:
        assert _registry.get_kind("zz_good") is DocKind
    finally:
        _registry.unregister("zz_good")
    assert _registry.get_kind("zz_good").__name__ == "Zed"


def test_errors_are_engine_errors() -> None:
    with pytest.raises(EngineError) as info:
        _registry.get_kind("zzz")
    assert info.value.code == 1103 and info.value.name == "UnknownKindError"
