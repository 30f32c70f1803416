"""YAML aliases in a topology are refused at once: a "billion laughs" file (nested aliases, 10^9
leaves after expansion) made `${VAR}` substitution and `mediaengine validate` walk it forever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mediaengine.sdk.errors import TopologySyntaxError
from mediaengine.topology.topofile import parse_yaml

from tests.enginekit import ROOT

LAUGHS = "\n".join(
    ["version: 1", "name: laughs", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    + ["nodes:", "  - {id: src, kind: test_pattern, options: {text: *a9}}", ""])


def test_a_billion_laughs_topology_is_refused_quickly_by_validate(tmp_path: Path) -> None:
    path = tmp_path / "laughs.yaml"
    path.write_text(LAUGHS)
    try:
        res = subprocess.run([sys.executable, "-m", "mediaengine.cli", "validate", str(path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("validate did not finish within 30 s on a billion-laughs topology")
    assert res.returncode == 2, res
    assert "YAML aliases are not allowed" in res.stderr and "error 1101" in res.stderr, res.stderr
    assert "line 4" in res.stderr


def test_aliases_and_merge_keys_are_refused_with_their_place() -> None:
    with pytest.raises(TopologySyntaxError, match=r"\*base") as info:
        parse_yaml("base: &base {fps: 30}\nnode:\n  <<: *base\n")
    assert info.value.where == "line 3, column 7"
    assert parse_yaml("anchored: &only {fps: 30}\n") == {"anchored": {"fps": 30}}  # an anchor alone is harmless
