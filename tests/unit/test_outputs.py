"""A `snapshot` command writes only inside the topology's `output_dir` (issue 9 item 2).

The actor's own `on_control`/`on_frame` are driven with real frames and a real file system: every
way out (`..`, an absolute path elsewhere, a symbolic link on the way or in place of the file, a
dotfile, a name that is not `.png`) is refused with OutputPathError (1415) and nothing is written
outside.  The end-to-end check through the control port is in tests/integration/test_secrets.py.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from mediaengine.actors import snapshot
from mediaengine.sdk.errors import NotAllowedError, OutputPathError
from mediaengine.sdk.formats import NS, Frame, VideoFormat
from mediaengine.sdk.outputs import OutputDir
from mediaengine.testing import ActorHarness
from mediaengine.topology.loader import load_topology

FMT = VideoFormat(64, 48, 30.0)


def picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(output_dir, a folder outside it that holds a precious file)."""
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "home"
    outside.mkdir()
    (outside / "precious.png").write_bytes(b"keep me")
    return out, outside


def make(out: Path) -> ActorHarness:
    actor = ActorHarness(snapshot.Snapshot, {"path": str(out / "auto.png")}, input_formats={"in": FMT},
                         output_dir=str(out))
    actor.frame("in", Frame(picture(0), pts_ns=0))  # the first frame goes to the option's path
    return actor


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize(("requested", "rule"), [
    ("../home/precious.png", "`..` is not allowed"),
    ("sub/../../home/precious.png", "`..` is not allowed"),
    ("sub/../fine.png", "`..` is not allowed"),  # even one that would come back inside
    ("{outside}/precious.png", "is outside the output directory"),
    ("/etc/mediaengine-test.png", "is outside the output directory"),
    (".hidden.png", "hidden name"),
    (".ssh/authorized_keys.png", "hidden name"),
    ("notes.txt", "must end with .png"),
    ("cam", "must end with .png"),
    ("{out}", "names the output directory"),
    ("a\0b.png", "non-empty file name"),
])
def test_paths_that_leave_the_output_directory_are_refused(layout: tuple[Path, Path], requested: str,
                                                           rule: str) -> None:
    out, outside = layout
    actor = make(out)
    before_out, before_outside = files_under(out), files_under(outside)
    with pytest.raises(OutputPathError, match=rule) as info:
        actor.control("snapshot", path=requested.format(out=out, outside=outside))
    assert info.value.code == 1415 and isinstance(info.value, NotAllowedError)
    actor.frame("in", Frame(picture(1), pts_ns=NS))
    assert files_under(out) == before_out and files_under(outside) == before_outside
    assert (outside / "precious.png").read_bytes() == b"keep me"


def test_relative_and_absolute_paths_inside_are_written(layout: tuple[Path, Path]) -> None:
    out, _ = layout
    actor = make(out)
    assert actor.control("snapshot", path="cams/a.png") == {"path": str(out / "cams" / "a.png")}
    assert actor.control("snapshot", path=str(out / "b.png")) == {"path": str(out / "b.png")}
    frame = picture(2)
    saved = [a.data["path"] for a in actor.frame("in", Frame(frame, pts_ns=NS))]
    assert saved == [str(out / "cams" / "a.png"), str(out / "b.png")]
    assert (out / "cams" / "a.png").stat().st_size > 100 and (out / "b.png").stat().st_size > 100
    assert not [p for p in files_under(out) if p.endswith(".tmp")]


def test_a_symlinked_folder_that_leads_out_is_refused(layout: tuple[Path, Path]) -> None:
    out, outside = layout
    (out / "escape").symlink_to(outside)
    actor = make(out)
    actor.control("snapshot", path="escape/precious.png")  # lexically fine: the walk refuses it
    (event,) = actor.frame("in", Frame(picture(3), pts_ns=NS))  # reported; the node goes on
    assert event.name == "snapshot_failed" and event.data["code"] == 1415
    assert "'escape' on the way is a symbolic link" in event.data["message"]
    assert (outside / "precious.png").read_bytes() == b"keep me"
    assert files_under(outside) == {"precious.png"}


def test_a_symlink_in_place_of_the_file_is_replaced_not_followed(layout: tuple[Path, Path]) -> None:
    out, outside = layout
    (out / "cam.png").symlink_to(outside / "precious.png")
    actor = make(out)
    actor.control("snapshot", path="cam.png")
    actor.frame("in", Frame(picture(4), pts_ns=NS))
    assert (outside / "precious.png").read_bytes() == b"keep me"
    assert not (out / "cam.png").is_symlink() and (out / "cam.png").read_bytes()[:4] == b"\x89PNG"


def test_a_folder_swapped_for_a_link_after_the_check_is_refused(layout: tuple[Path, Path]) -> None:
    out, outside = layout
    outputs = OutputDir.of(str(out))
    checked = outputs.check("later/x.png", (".png",))
    (out / "later").symlink_to(outside)  # the race: created between the command and the write
    with pytest.raises(OutputPathError, match="symbolic link"):
        outputs.write(checked, b"\x89PNG data")
    assert files_under(outside) == {"precious.png"}
    assert checked == PurePosixPath("later/x.png")


def test_output_dir_is_a_topology_key_relative_to_the_working_directory(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    doc = {"version": 1, "nodes": [{"id": "t", "kind": "tone"}]}
    assert load_topology(doc).output_dir == os.path.abspath(".")
    assert load_topology({**doc, "output_dir": "shots"}).output_dir == str(tmp_path / "shots")
