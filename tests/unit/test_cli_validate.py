"""`mediaengine validate` and friends on broken files: one clear line naming the place, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mediaengine.cli.main import main

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
version: 1
nodes:
  - {id: src, kind: test_pattern, options: {width: 320, height: 180, fps: 15}}
  - {id: tone, kind: tone}
  - {id: venc, kind: video_encoder, inputs: {in: src}}
  - {id: aenc, kind: audio_encoder, inputs: {in: tone}}
  - {id: rec, kind: recorder, inputs: {video: venc, audio: aenc}, options: {path: "${OUT_PATH}"}}
"""

# (name, yaml text, expected fragment of the place, expected fragment of the message)
BROKEN = [
    ("not yaml", "version: 1\nnodes: [\n", "line 3, column 1", "not valid YAML"),
    ("not a mapping", "- 1\n- 2\n", "the top level", "mapping"),
    ("no version", GOOD.replace("version: 1\n", ""), "version", "version"),
    ("bad version", GOOD.replace("version: 1", "version: 7"), "version", "7"),
    ("no nodes", "version: 1\n", "nodes", "nodes"),
    ("unknown kind", GOOD.replace("kind: tone}", "kind: tones}"), "nodes[1].kind", "tone"),
    ("unknown node", GOOD.replace("{in: src}", "{in: cam2}"), "nodes[2].inputs.in", "cam2"),
    ("unknown input pad", GOOD.replace("{in: src}", "{input: src}"), "nodes[2].inputs.input", "input"),
    ("unknown output pad", GOOD.replace("{in: src}", "{in: src/video}"), "nodes[2].inputs.in", "video"),
    ("duplicate id", GOOD.replace("id: tone,", "id: src,").replace("{in: tone}", "{in: src}"), "nodes[1].id",
     "src"),
    ("cycle", GOOD.replace("kind: test_pattern, options: {width: 320, height: 180, fps: 15}",
                           "kind: overlay, inputs: {in: f2}")
     + "  - {id: f2, kind: overlay, inputs: {in: src}}\n", "nodes[0].inputs.in", "src -> f2 -> src"),
    ("missing required option", GOOD.replace(', options: {path: "${OUT_PATH}"}', ""), "nodes[4].options",
     "path"),
    ("wrong option type", GOOD.replace("width: 320", "width: wide"), "nodes[0].options.width", "int"),
    ("unknown option", GOOD.replace("width: 320", "widht: 320"), "nodes[0].options.widht", "width"),
    ("format mismatch", GOOD.replace("{in: src}", "{in: tone}"), "nodes[2].inputs.in", "video"),
    ("codec mismatch", GOOD.replace("{video: venc, audio: aenc}", "{video: aenc, audio: aenc}"),
     "nodes[4].inputs.video", "h264"),
    ("unset variable", GOOD, "nodes[4].options.path", "OUT_PATH"),
    ("bad restart", GOOD.replace("{id: tone, kind: tone}", "{id: tone, kind: tone, restart: always}"),
     "nodes[1].restart", "permanent"),
    ("bad policy", GOOD.replace("{in: src}", "{in: {from: src, policy: sometimes}}"), "nodes[2].inputs.in",
     "drop_oldest"),
    ("bad group member", GOOD + "groups:\n  g: {members: [venc, ghost]}\n", "groups.g.members", "ghost"),
    ("bad strategy", GOOD + "groups:\n  g: {members: [venc], strategy: all_for_one}\n", "groups.g.strategy",
     "one_for_all"),
    ("unlinked required input", GOOD.replace(", inputs: {in: src}", ""), "nodes[2].inputs", "in"),
    ("bad node id", GOOD.replace("id: tone,", "id: 9tone,").replace("{in: tone}", "{in: 9tone}"),
     "nodes[1].id", "9tone"),
    ("unknown top-level key", GOOD + "nodez: []\n", "nodez", "nodes"),
]


@pytest.mark.parametrize(("name", "text", "place", "fragment"), BROKEN, ids=[b[0] for b in BROKEN])
def test_validate_rejects_with_place_and_no_traceback(
    name: str, text: str, place: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if name != "unset variable":
        monkeypatch.setenv("OUT_PATH", str(tmp_path / "x.mp4"))
    else:
        monkeypatch.delenv("OUT_PATH", raising=False)
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert place, "every error names its place: give the expected place"
    assert err.startswith(f"error: {place}"), err
    assert fragment in err, err


def test_the_good_file_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUT_PATH", str(tmp_path / "x.mp4"))
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    assert main(["validate", str(path)]) == 0
    assert "ok (5 nodes" in capsys.readouterr().out


def test_every_shipped_topology_validates(capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSH_URL", "rtmp://127.0.0.1:1935/live/test")
    files = sorted((ROOT / "topologies").glob("*.yaml"))
    assert files
    for f in files:
        assert main(["validate", str(f)]) == 0, capsys.readouterr().err


def test_missing_file_is_a_clear_error_from_a_real_process(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mediaengine.cli", "validate", str(tmp_path / "nope.yaml")],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode != 0
    assert "nope.yaml" in out.stderr and "Traceback" not in out.stderr


def test_graph_and_kinds_and_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dot = tmp_path / "demo.dot"
    assert main(["graph", str(ROOT / "topologies/demo.yaml"), "-o", str(dot)]) == 0
    text = dot.read_text()
    assert "digraph" in text and "venc" in text and "rec" in text
    svg = tmp_path / "demo.svg"
    assert main(["graph", str(ROOT / "topologies/demo.yaml"), "-o", str(svg)]) == 0
    assert svg.read_text().lstrip().startswith(("<?xml", "<svg"))
    capsys.readouterr()
    assert main(["kinds", "--json"]) == 0
    kinds = json.loads(capsys.readouterr().out)
    for kind in ("test_pattern", "tone", "overlay", "video_encoder", "audio_encoder", "recorder", "snapshot",
                 "file_source", "image_source"):
        assert kind in kinds
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema.get("$schema", "").startswith("https://json-schema.org/")


@pytest.mark.parametrize(("text", "value"), [
    ("800", 800), ("1.5", 1.5), ("true", True), ("hello", "hello"), ("Q1: who wins?", "Q1: who wins?"),
    ("- a", "- a"), ("[1, 2]", [1, 2]), ("{a: 1}", {"a": 1}), ("", ""), ("null", None),
])
def test_command_line_values_keep_plain_text_as_text(text: str, value: object) -> None:
    from mediaengine.topology.topofile import parse_cli_value

    assert parse_cli_value(text) == value


def test_set_override_with_a_colon_stays_a_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mediaengine.topology.loader import load_topology

    monkeypatch.setenv("OUT_PATH", str(tmp_path / "x.mp4"))
    path = tmp_path / "good.yaml"
    path.write_text(GOOD.replace("{id: src, kind: test_pattern,", "{id: src, kind: test_pattern,"))
    topo = load_topology(path, overrides=["src.text=Q1: who wins?"])
    assert topo.node("src").options.text == "Q1: who wins?"
