"""Topology loader, schema and graph, against small fake kinds (not the real actors).

The fake kinds are registered by the `kinds` fixture and removed after each test:

    t_camera  video source (width, height, fps, pix_fmt; `pattern` is required)
    t_filter  video -> video, pass-through format
    t_venc    video -> encoded h264 (refuses odd widths in output_formats)
    t_tone    audio source
    t_aenc    audio -> encoded aac
    t_sink    takes encoded h264 on `video` (required) and aac on `audio` (optional); no outputs
    t_mixer   audio request pads `in_%s` (at least one) -> audio
"""

from __future__ import annotations

import dataclasses
import pickle
import shutil
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jsonschema
import pytest
import yaml
from mediaengine.sdk.actor import Actor, InPort, OutPort, option
from mediaengine.sdk.errors import (
    CycleError,
    DuplicateIdError,
    EngineError,
    FileError,
    FormatError,
    FormatMismatchError,
    OptionError,
    ResourceError,
    SupervisionError,
    TopologyError,
    TopologySyntaxError,
    TopologyVersionError,
    UnknownKindError,
    UnknownNodeError,
    UnknownPadError,
    UnlinkedInputError,
    VariableError,
)
from mediaengine.sdk.formats import AAC, H264, AudioFormat, Format, VideoFormat
from mediaengine.topology import graph as _graph
from mediaengine.topology import registry as _registry
from mediaengine.topology.loader import SupervisorSpec, Topology, load_topology
from mediaengine.topology.schema import topology_schema

# ---- fake kinds ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraOptions:
    pattern: str  # required: what to draw
    width: int = option(640, doc="frame width")
    height: int = option(360, doc="frame height")
    fps: float = option(30.0, doc="frames per second")
    pix_fmt: Literal["rgb24", "gray"] = "rgb24"
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"size must be positive, got {self.width}x{self.height}")


class FakeCamera(Actor[CameraOptions]):
    outputs = {"out": OutPort("video", default=True)}
    Options = CameraOptions
    is_source = True

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        return {"out": VideoFormat(options.width, options.height, options.fps, options.pix_fmt)}


@dataclass(frozen=True)
class FilterOptions:
    strength: int = option(50, range=(0, 100), live=True, doc="0..100")


class FakeFilter(Actor[FilterOptions]):
    inputs = {"in": InPort("video")}
    outputs = {"out": OutPort("video")}
    Options = FilterOptions


@dataclass(frozen=True)
class VencOptions:
    bitrate_kbps: int = 800
    preset: Literal["ultrafast", "veryfast"] = "veryfast"


class FakeVenc(Actor[VencOptions]):
    inputs = {"in": InPort("video", policy="block")}
    outputs = {"out": OutPort("encoded")}
    Options = VencOptions

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        fmt = input_formats["in"]
        if isinstance(fmt, VideoFormat) and fmt.width % 2:
            raise FormatError(f"h264 needs an even width, got {fmt.width}")
        return {"out": H264}


@dataclass(frozen=True)
class ToneOptions:
    rate: int = 48000
    channels: int = 1


class FakeTone(Actor[ToneOptions]):
    outputs = {"out": OutPort("audio")}
    Options = ToneOptions
    is_source = True

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        return {"out": AudioFormat(options.rate, options.channels)}


class FakeAenc(Actor[Any]):
    inputs = {"in": InPort("audio", policy="block")}
    outputs = {"out": OutPort("encoded")}

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        return {"out": AAC}


@dataclass(frozen=True)
class SinkOptions:
    path: str = option(doc="where to write")
    segment_s: float | None = None


class FakeSink(Actor[SinkOptions]):
    inputs = {"video": InPort("encoded", codecs=("h264",), policy="block"),
              "audio": InPort("encoded", codecs=("aac",), policy="block", required=False)}
    Options = SinkOptions


class FakeMixer(Actor[Any]):
    inputs = {"in_%s": InPort("audio", policy="block")}
    outputs = {"out": OutPort("audio")}


FAKE_KINDS: dict[str, type[Actor[Any]]] = {
    "t_camera": FakeCamera, "t_filter": FakeFilter, "t_venc": FakeVenc, "t_tone": FakeTone,
    "t_aenc": FakeAenc, "t_sink": FakeSink, "t_mixer": FakeMixer,
}


@pytest.fixture(autouse=True)
def kinds() -> Iterator[None]:
    for name, cls in FAKE_KINDS.items():
        _registry.register(name, cls)
    try:
        yield
    finally:
        for name in FAKE_KINDS:
            _registry.unregister(name)


def load(text: str, **kwargs: Any) -> Topology:
    return load_topology(yaml.safe_load(textwrap.dedent(text)), **kwargs)


FULL = """
version: 1
name: demo
supervisor: {intensity: 4, heartbeat_timeout_s: 2}
nodes:
  - {id: rec, kind: t_sink, inputs: {video: {from: enc, policy: drop_newest}, audio: aenc},
     options: {path: "${OUT}"}, restart: transient}
  - {id: cam, kind: t_camera, options: {pattern: bars, width: 1280, height: 720, fps: 25}}
  - {id: f, kind: t_filter, inputs: {in: cam/out}}
  - {id: enc, kind: t_venc, inputs: {in: f}, restart: permanent}
  - {id: tone, kind: t_tone, options: {channels: 2}}
  - {id: aenc, kind: t_aenc, inputs: {in: tone}}
groups:
  uplink: {members: [rec, enc], strategy: one_for_all, intensity: 5, period_s: 30}
"""
ENV = {"OUT": "/tmp/secret-out.flv"}


# ---- valid topologies ----------------------------------------------------------------------------

def test_full_topology_order_edges_formats_and_defaults() -> None:
    topo = load(FULL, env=ENV)
    assert topo.name == "demo" and topo.version == 1 and topo.source == "<dict>"
    # sources first, file order among equals; every producer before its consumers
    assert [n.id for n in topo.nodes] == ["cam", "f", "enc", "tone", "aenc", "rec"]
    assert [n.index for n in topo.nodes] == [1, 2, 3, 4, 5, 0]
    cam, f, enc, tone, _aenc, rec = topo.nodes
    assert cam.options == CameraOptions(pattern="bars", width=1280, height=720, fps=25.0)
    assert cam.is_source and tone.is_source and not f.is_source and not rec.is_source
    assert f.options == FilterOptions()  # defaults
    assert f.input_formats == {"in": VideoFormat(1280, 720, 25.0)}
    assert f.output_formats == {"out": VideoFormat(1280, 720, 25.0)}
    assert enc.output_formats == {"out": H264}
    assert rec.input_formats == {"video": H264, "audio": AAC}
    assert rec.output_formats == {} and rec.outputs == {}
    # policies: the pad's default unless the link sets one
    assert f.inputs["in"].policy == "drop_oldest"
    assert enc.inputs["in"].policy == "block"
    assert rec.inputs["video"].policy == "drop_newest"
    # node/pad and bare node both resolve to the default output pad
    assert (f.inputs["in"].src, f.inputs["in"].src_pad) == ("cam", "out")
    assert (enc.inputs["in"].src, enc.inputs["in"].src_pad) == ("f", "out")
    assert [(e.src, e.dst, e.dst_pad) for e in topo.edges] == [
        ("cam", "f", "in"), ("f", "enc", "in"), ("tone", "aenc", "in"),
        ("enc", "rec", "video"), ("aenc", "rec", "audio")]
    assert rec.restart == "transient" and cam.restart == "permanent"
    assert topo.supervisor == SupervisorSpec(intensity=4, heartbeat_timeout_s=2.0)
    (uplink,) = topo.groups
    assert uplink.members == ("enc", "rec")  # start (topological) order, not file order
    assert (uplink.strategy, uplink.intensity, uplink.period_s) == ("one_for_all", 5, 30.0)
    assert rec.group == "uplink" and cam.group is None
    assert topo.node("enc") is enc
    assert topo.downstream("cam") == ["f", "enc", "rec"]
    assert topo.downstream("cam", direct=True) == ["f"]


def test_fan_out_and_group_defaults() -> None:
    topo = load("""
    version: 1
    supervisor: {intensity: 7, period_s: 20}
    nodes:
      - {id: cam, kind: t_camera, options: {pattern: bars}}
      - {id: a, kind: t_filter, inputs: {in: cam}}
      - {id: b, kind: t_filter, inputs: {in: cam/out}}
      - {id: c, kind: t_filter, inputs: {in: {from: cam, policy: block}}}
    groups:
      filters: {members: [c, a]}
    """)
    edges = topo.node("cam").outputs["out"]
    assert [(e.dst, e.policy) for e in edges] == [("a", "drop_oldest"), ("b", "drop_oldest"), ("c", "block")]
    assert all(e.format == VideoFormat(640, 360, 30.0) for e in edges)
    (g,) = topo.groups
    assert (g.members, g.strategy, g.intensity, g.period_s) == (("a", "c"), "one_for_one", 7, 20.0)
    assert g.restart == "permanent"  # beyond its intensity a group escalates unless marked temporary
    assert topo.supervisor.startup_timeout_s == 20.0
    assert topo.name == "topology"
    assert topo.supervisor.heartbeat_interval_s == 0.2 and topo.supervisor.shutdown_timeout_s == 10.0


def test_unlinked_output_pads_are_listed_without_edges() -> None:
    topo = load("""
    version: 1
    nodes: [{id: cam, kind: t_camera, options: {pattern: x}}]
    """)
    assert topo.node("cam").outputs == {"out": ()}
    assert topo.edges == () and topo.groups == ()


def test_request_pads_from_template() -> None:
    topo = load("""
    version: 1
    nodes:
      - {id: t1, kind: t_tone}
      - {id: t2, kind: t_tone}
      - {id: mix, kind: t_mixer, inputs: {in_music: t2, in_mic: t1}}
    """)
    mix = topo.node("mix")
    assert list(mix.inputs) == ["in_music", "in_mic"]
    assert mix.inputs["in_mic"].policy == "block"


def test_variables_secrets_and_redaction() -> None:
    env = {"KEY": "s3cr3tkey", "HOST": "example.org", "FPS": "24"}
    topo = load("""
    version: 1
    nodes:
      - {id: cam, kind: t_camera, options: {pattern: "$${NOT_A_VAR} ${HOST}", fps: "${FPS}",
                                           tags: ["rtmp://${HOST}/live/${KEY}", "${MISSING:-fallback}"]}}
    """, env=env)
    opts = topo.node("cam").options
    assert opts.pattern == "${NOT_A_VAR} example.org"
    assert opts.fps == 24.0  # a whole "${VAR}" is read as a YAML scalar when the option is not a string
    assert opts.tags == ("rtmp://example.org/live/s3cr3tkey", "fallback")
    assert topo.secrets == frozenset({"s3cr3tkey", "example.org", "24"})
    assert topo.redact("pushing to rtmp://example.org/live/s3cr3tkey") == "pushing to rtmp://***/live/***"
    # a short secret is redacted as a whole token only, so logs stay readable
    assert topo.redact("fps 24, frame 1240, 24") == "fps ***, frame 1240, ***"


def test_errors_never_show_secret_values() -> None:
    with pytest.raises(OptionError) as info:
        load("""
        version: 1
        nodes: [{id: cam, kind: t_camera, options: {pattern: x, width: "${KEY}"}}]
        """, env={"KEY": "hunter2-key"})
    assert info.value.where == "nodes[0].options.width"
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_overrides_are_applied_before_validation() -> None:
    topo = load("""
    version: 1
    nodes:
      - {id: cam, kind: t_camera, options: {width: 320}}
      - {id: f, kind: t_filter, inputs: {in: cam}}
    """, overrides=["cam.pattern=smpte", "cam.fps=15", "cam.tags=[a, b]", "f.strength=0", "cam.width=64"])
    assert topo.node("cam").options == CameraOptions(pattern="smpte", width=64, fps=15.0, tags=("a", "b"))
    assert topo.node("f").options.strength == 0
    assert topo.node("f").input_formats["in"] == VideoFormat(64, 360, 15.0)


def test_file_source_and_options_pickle_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "chain.yaml"
    path.write_text(textwrap.dedent(FULL))
    topo = load_topology(path, env=ENV)
    assert topo.source == str(path) and topo.name == "demo"
    assert load_topology(str(path), env=ENV).node("cam").options == topo.node("cam").options
    for node in topo.nodes:  # the actor process gets the validated instance as it is, pickled
        assert pickle.loads(pickle.dumps(node.options)) == node.options
    assert pickle.loads(pickle.dumps(topo)) == topo


def test_dict_source_is_not_mutated() -> None:
    doc = yaml.safe_load(FULL)
    before = repr(doc)
    load_topology(doc, env=ENV, overrides=["cam.fps=10"])
    assert repr(doc) == before


# ---- broken topologies ---------------------------------------------------------------------------

BASE = """
version: 1
nodes:
  - {id: cam, kind: t_camera, options: {pattern: bars}}
  - {id: enc, kind: t_venc, inputs: {in: cam}}
  - {id: rec, kind: t_sink, inputs: {video: enc}, options: {path: out.flv}}
"""

BROKEN: list[tuple[str, str, type[EngineError], str | None, str]] = [
    ("not_a_mapping", "- a\n- b\n", TopologySyntaxError, None, "top level must be a mapping"),
    ("missing_version", "nodes: []\n", TopologyVersionError, "version", "missing `version: 1`"),
    ("version_2", BASE.replace("version: 1", "version: 2"), TopologyVersionError, "version",
     "unsupported version 2"),
    ("version_string", BASE.replace("version: 1", "version: '1'"), TopologyVersionError, "version",
     "must be the integer 1"),
    ("unknown_top_key", BASE + "node: []\n", TopologySyntaxError, "node", "did you mean 'nodes'?"),
    ("nodes_missing", "version: 1\nname: x\n", TopologySyntaxError, "nodes", "missing `nodes:`"),
    ("nodes_not_list", "version: 1\nnodes: {cam: 1}\n", TopologySyntaxError, "nodes", "must be a list"),
    ("nodes_empty", "version: 1\nnodes: []\n", TopologySyntaxError, "nodes", "at least one node"),
    ("node_not_mapping", "version: 1\nnodes: [cam]\n", TopologySyntaxError, "nodes[0]",
     "must be a mapping"),
    ("missing_kind", "version: 1\nnodes: [{id: cam}]\n", TopologySyntaxError, "nodes[0]", "missing `kind`"),
    ("missing_id", "version: 1\nnodes: [{kind: t_tone}]\n", TopologySyntaxError, "nodes[0]", "missing `id`"),
    ("bad_id", "version: 1\nnodes: [{id: 2cam, kind: t_tone}]\n", TopologySyntaxError, "nodes[0].id",
     "starts with a letter"),
    ("long_id", f"version: 1\nnodes: [{{id: {'a' * 33}, kind: t_tone}}]\n", TopologySyntaxError,
     "nodes[0].id", "up to 31"),
    ("duplicate_id", BASE + "  - {id: enc, kind: t_tone}\n", DuplicateIdError, "nodes[3].id",
     "duplicate id 'enc' (already used by nodes[1])"),
    ("unknown_node_key", BASE.replace("options: {pattern: bars}", "option: {pattern: bars}"),
     TopologySyntaxError, "nodes[0].option", "did you mean 'options'?"),
    ("unknown_kind", BASE.replace("t_venc", "t_vnec"), UnknownKindError, "nodes[1].kind",
     "did you mean 't_venc'?"),
    ("kind_lists_known", BASE.replace("t_venc", "zzzz"), UnknownKindError, "nodes[1].kind",
     "known kinds: "),
    ("unknown_option", BASE.replace("pattern: bars", "pattern: bars, widht: 3"), OptionError,
     "nodes[0].options.widht", "did you mean 'width'?"),
    ("wrong_type", BASE.replace("pattern: bars", "pattern: bars, width: wide"), OptionError,
     "nodes[0].options.width", "expected int, got str 'wide'"),
    ("wrong_literal", BASE.replace("pattern: bars", "pattern: bars, pix_fmt: yuv"), OptionError,
     "nodes[0].options.pix_fmt", "expected 'rgb24' | 'gray'"),
    ("bool_is_not_int", BASE.replace("pattern: bars", "pattern: bars, width: true"), OptionError,
     "nodes[0].options.width", "expected int, got bool"),
    ("missing_required_option", BASE.replace("options: {pattern: bars}", "options: {}"), OptionError,
     "nodes[0].options", "missing required option 'pattern' (str)"),
    ("options_not_mapping", BASE.replace("options: {pattern: bars}", "options: [bars]"), OptionError,
     "nodes[0].options", "must be a mapping"),
    ("post_init_rejects", BASE.replace("pattern: bars", "pattern: bars, width: -4"), OptionError,
     "nodes[0].options", "size must be positive"),
    ("unknown_input_pad", BASE.replace("inputs: {in: cam}", "inputs: {input: cam}"), UnknownPadError,
     "nodes[1].inputs.input", "did you mean 'in'?"),
    ("source_takes_no_inputs", BASE.replace("options: {pattern: bars}", "options: {pattern: bars}, "
                                            "inputs: {in: enc}"), UnknownPadError, "nodes[0].inputs.in",
     "takes no inputs"),
    ("unknown_source_node", BASE.replace("inputs: {in: cam}", "inputs: {in: cam2}"), UnknownNodeError,
     "nodes[1].inputs.in", "unknown node 'cam2'; did you mean 'cam'?"),
    ("unknown_source_pad", BASE.replace("inputs: {in: cam}", "inputs: {in: cam/video}"), UnknownPadError,
     "nodes[1].inputs.in", "no output pad 'video'"),
    ("link_from_sink", BASE + "  - {id: f, kind: t_filter, inputs: {in: rec}}\n", UnknownPadError,
     "nodes[3].inputs.in", "has no output pads"),
    ("link_bad_syntax", BASE.replace("inputs: {in: cam}", "inputs: {in: cam/out/x}"), TopologySyntaxError,
     "nodes[1].inputs.in", "expected 'node', 'node/pad'"),
    ("link_without_from", BASE.replace("inputs: {in: cam}", "inputs: {in: {policy: block}}"),
     TopologySyntaxError, "nodes[1].inputs.in", "missing `from:"),
    ("bad_policy", BASE.replace("inputs: {in: cam}", "inputs: {in: {from: cam, policy: drop}}"), OptionError,
     "nodes[1].inputs.in.policy", "unknown policy 'drop'"),
    ("required_input_unlinked", BASE.replace("inputs: {video: enc}", "inputs: {}"), UnlinkedInputError,
     "nodes[2].inputs", "required input pad 'video'"),
    ("request_pad_unlinked", BASE + "  - {id: mix, kind: t_mixer}\n", UnlinkedInputError, "nodes[3].inputs",
     "required input pad 'in_%s'"),
    ("cycle", """
version: 1
nodes:
  - {id: cam, kind: t_camera, options: {pattern: bars}}
  - {id: a, kind: t_filter, inputs: {in: c}}
  - {id: b, kind: t_filter, inputs: {in: a}}
  - {id: c, kind: t_filter, inputs: {in: b}}
""", CycleError, "nodes[1].inputs.in", "cycle a -> b -> c -> a"),
    ("self_loop", BASE + "  - {id: f, kind: t_filter, inputs: {in: f}}\n", CycleError, "nodes[3].inputs.in",
     "cycle f -> f"),
    ("format_kind_mismatch", BASE.replace("inputs: {video: enc}", "inputs: {video: cam}"),
     FormatMismatchError, "nodes[2].inputs.video",
     "cam/out produces video rgb24 640x360@30, but input pad 'video' of kind t_sink expects encoded"),
    ("codec_mismatch", BASE.replace("inputs: {video: enc}", "inputs: {video: enc, audio: enc}"),
     FormatMismatchError, "nodes[2].inputs.audio", "expects aac, got encoded h264/annexb"),
    ("pix_fmt_mismatch", BASE.replace("pattern: bars", "pattern: bars, pix_fmt: gray"), FormatMismatchError,
     "nodes[1].inputs.in", "expects pixel format rgb24"),
    ("output_formats_refuses", BASE.replace("pattern: bars", "pattern: bars, width: 641"),
     FormatMismatchError, "nodes[1].inputs", "h264 needs an even width, got 641"),
    ("bad_restart", BASE.replace("inputs: {in: cam}", "inputs: {in: cam}, restart: always"),
     SupervisionError, "nodes[1].restart", "unknown restart type 'always'"),
    ("group_unknown_member", BASE + "groups: {up: {members: [enc, rek]}}\n", SupervisionError,
     "groups.up.members[1]", "unknown node 'rek'; did you mean 'rec'?"),
    ("member_in_two_groups", BASE + "groups: {a: {members: [enc]}, b: {members: [rec, enc]}}\n",
     SupervisionError, "groups.b.members[1]", "already in group 'a'"),
    ("bad_strategy", BASE + "groups: {up: {members: [enc], strategy: one_for_rest}}\n", SupervisionError,
     "groups.up.strategy", "did you mean 'one_for_one'"),
    ("intensity_zero", BASE + "groups: {up: {members: [enc], intensity: 0}}\n", SupervisionError,
     "groups.up.intensity", "must be >= 1"),
    ("intensity_float", BASE + "groups: {up: {members: [enc], intensity: 2.5}}\n", SupervisionError,
     "groups.up.intensity", "must be an integer"),
    ("period_zero", BASE + "groups: {up: {members: [enc], period_s: 0}}\n", SupervisionError,
     "groups.up.period_s", "must be > 0"),
    ("group_restart_transient", BASE + "groups: {up: {members: [enc], restart: transient}}\n", SupervisionError,
     "groups.up.restart", "expected one of: permanent, temporary"),
    ("group_unknown_key", BASE + "groups: {up: {members: [enc], stratgy: one_for_all}}\n", SupervisionError,
     "groups.up.stratgy", "did you mean 'strategy'?"),
    ("supervisor_unknown_key", BASE + "supervisor: {intensty: 3}\n", SupervisionError,
     "supervisor.intensty", "did you mean 'intensity'?"),
    ("supervisor_negative", BASE + "supervisor: {backoff_max_s: -1}\n", SupervisionError,
     "supervisor.backoff_max_s", "must be > 0"),
    ("heartbeat_timeout_too_short", BASE + "supervisor: {heartbeat_timeout_s: 0.1}\n", SupervisionError,
     "supervisor.heartbeat_timeout_s", "longer than heartbeat_interval_s"),
    ("unset_variable", BASE.replace("path: out.flv", "path: '${OUT_DIR}/x.flv'"), VariableError,
     "nodes[2].options.path", "environment variable OUT_DIR is not set"),
    ("bad_variable_name", BASE.replace("path: out.flv", "path: '${1X}'"), VariableError,
     "nodes[2].options.path", "bad variable name '1X'"),
    ("unterminated_variable", BASE.replace("path: out.flv", "path: '${OUT'"), VariableError,
     "nodes[2].options.path", "unterminated"),
]


@pytest.mark.parametrize(("text", "cls", "where", "fragment"), [case[1:] for case in BROKEN],
                         ids=[case[0] for case in BROKEN])
def test_broken_topology(text: str, cls: type[EngineError], where: str | None, fragment: str) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology(yaml.safe_load(text), env={})
    err = info.value
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert err.where == where
    assert fragment in err.message
    assert str(err) == (f"{where}: {err.message}" if where else err.message)


BROKEN_OVERRIDES: list[tuple[str, type[EngineError], str, str]] = [
    ("cam.fps", OptionError, "--set cam.fps", "expected node.option=value"),
    ("fps=3", OptionError, "--set fps=3", "expected node.option=value"),
    ("cma.fps=3", OptionError, "--set cma.fps", "unknown node 'cma'; did you mean 'cam'?"),
    ("cam.fsp=3", OptionError, "--set cam.fsp", "did you mean 'fps'?"),
    ("cam.fps=fast", OptionError, "--set cam.fps", "expected float, got str 'fast'"),
    ("cam.fps=[1, 2", OptionError, "--set cam.fps", "cannot read value"),
]


@pytest.mark.parametrize(("override", "cls", "where", "fragment"), BROKEN_OVERRIDES)
def test_broken_override(override: str, cls: type[EngineError], where: str, fragment: str) -> None:
    with pytest.raises(TopologyError) as info:
        load_topology(yaml.safe_load(BASE), overrides=[override])
    assert type(info.value) is cls
    assert info.value.where == where
    assert fragment in info.value.message


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nnodes:\n  - {id: cam, kind: t_tone\n  - {id: b}\n")
    with pytest.raises(TopologySyntaxError) as info:
        load_topology(path)
    assert info.value.where is not None and info.value.where.startswith("line 4, column")
    assert "not valid YAML" in info.value.message


def test_yaml_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("version: 1\nnodes:\n  - id: cam\n    kind: t_tone\n    id: other\n")
    with pytest.raises(TopologySyntaxError) as info:
        load_topology(path)
    assert info.value.where == "line 5, column 5"
    assert "duplicate key 'id'" in info.value.message


def test_missing_file_is_file_error(tmp_path: Path) -> None:
    with pytest.raises(FileError) as info:
        load_topology(tmp_path / "nope.yaml")
    assert info.value.code == 1301 and isinstance(info.value, EngineError)
    assert info.value.where == str(tmp_path / "nope.yaml")
    assert "no such topology file" in info.value.message


def test_actor_that_breaks_its_own_output_format_contract() -> None:
    class Liar(Actor[Any]):
        inputs = {"in": InPort("video")}
        outputs = {"out": OutPort("encoded")}  # but the default output_formats passes video through

    _registry.register("t_liar", Liar)
    try:
        with pytest.raises(FormatMismatchError) as info:
            load_topology(yaml.safe_load(BASE.replace("t_venc", "t_liar")))
    finally:
        _registry.unregister("t_liar")
    assert info.value.where == "nodes[1]"
    assert "declares output pad 'out' as encoded but computed video" in info.value.message


def test_topology_node_lookup_suggests() -> None:
    topo = load(BASE)
    with pytest.raises(UnknownNodeError, match="did you mean 'enc'"):
        topo.node("emc")


# ---- schema --------------------------------------------------------------------------------------

def _validator() -> jsonschema.Draft202012Validator:
    schema = topology_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("text", [FULL, BASE, """
version: 1
nodes:
  - {id: t1, kind: t_tone}
  - {id: mix, kind: t_mixer, inputs: {in_a: t1, in_b: {from: t1/out, policy: drop_oldest}}}
  - {id: cam, kind: t_camera, options: {pattern: x, fps: "${FPS}", pix_fmt: "${PIX_FMT:-rgb24}"}}
"""])
def test_schema_accepts_valid_topologies(text: str) -> None:
    errors = list(_validator().iter_errors(yaml.safe_load(text)))
    assert errors == []


@pytest.mark.parametrize(("text", "path_fragment"), [
    (BASE.replace("pattern: bars", "pattern: bars, widht: 3"), "widht"),
    (BASE.replace("options: {pattern: bars}", "options: {}"), "pattern"),
    (BASE.replace("pattern: bars", "pattern: bars, width: wide"), "wide"),
    (BASE.replace("inputs: {in: cam}", "inputs: {input: cam}"), "input"),
    (BASE.replace("inputs: {video: enc}", "inputs: {}"), "video"),
    (BASE.replace("t_venc", "t_vnec"), "t_vnec"),
    (BASE.replace("version: 1", "version: 2"), "1"),
    (BASE + "  - {id: mix, kind: t_mixer, inputs: {}}\n", "in_"),
    (BASE + "groups: {up: {members: [enc], strategy: one_for_rest}}\n", "one_for_rest"),
    (BASE + "supervisor: {intensty: 3}\n", "intensty"),
])
def test_schema_rejects_invalid_topologies(text: str, path_fragment: str) -> None:
    errors = list(_validator().iter_errors(yaml.safe_load(text)))
    assert errors, "schema accepted an invalid topology"
    # the loader rejects the same documents
    with pytest.raises(TopologyError):
        load_topology(yaml.safe_load(text))


def test_schema_describes_options() -> None:
    kind = topology_schema()["$defs"]["kinds"]["t_camera"]
    props = kind["properties"]["options"]["properties"]
    assert props["width"]["default"] == 640 and props["width"]["description"] == "frame width"
    assert kind["properties"]["options"]["required"] == ["pattern"]
    assert props["pix_fmt"]["anyOf"][0] == {"enum": ["rgb24", "gray"]}  # or a whole "${VAR}"


# ---- graph ---------------------------------------------------------------------------------------

def test_to_dot_labels_and_shapes() -> None:
    dot = _graph.to_dot(load(FULL, env=ENV))
    assert '"cam" [label="cam\\nt_camera", shape=invhouse];' in dot
    assert '"f" [label="f\\nt_filter", shape=box, style="rounded"];' in dot
    assert '"rec" [label="rec\\nt_sink\\n(transient)", shape=house];' in dot
    assert '"cam" -> "f" [label="out→in\\nvideo rgb24 1280x720@25", style=dashed' in dot
    assert '"enc" -> "rec" [label="out→video\\nencoded h264/annexb", style=dotted' in dot
    assert 'subgraph "cluster_uplink"' in dot
    assert ENV["OUT"] not in dot


def test_render_dot_and_svg(tmp_path: Path) -> None:
    topo = load(FULL, env=ENV)
    _graph.render(topo, tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text() == _graph.to_dot(topo)
    _graph.render(topo, tmp_path / "g.svg")
    svg = (tmp_path / "g.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "t_camera" in svg


def test_render_without_graphviz(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ResourceError, match="apt-get install graphviz"):
        _graph.render(load(BASE), tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()
    with pytest.raises(ResourceError, match="use one of"):
        _graph.render(load(BASE), tmp_path / "g.jpg")


def test_spec_dataclasses_are_frozen() -> None:
    topo = load(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        topo.nodes[0].restart = "temporary"  # type: ignore[misc]
