"""The folder layout is the architecture: these checks keep the layers apart.

- `actors/` (installed as `mediaengine.actors`) imports only the actor SDK, `mediaengine.sdk`, and its own
  private modules: the runtime, supervision, control and CLI can change without touching an actor.
- `mediaengine.sdk` imports nothing from the engine's other layers, so an actor pulls in no engine internals.
- Inside `engine/` imports are relative (the package is installed as `mediaengine` from the folder `engine/`;
  relative imports are what lets `mypy engine` see the real types), and nothing anywhere imports the
  folder names `engine` or `actors` as packages: that would load a second copy of every module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("sdk", "topology", "runtime", "supervision", "control", "cli")


def _imports(path: Path) -> Iterator[tuple[int, int, str]]:
    """(line, level, module) of every import in `path`; `import a.b` gives level 0, module 'a.b'."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, 0, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, node.level, node.module or ""


def _py_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_actors_import_only_the_sdk() -> None:
    bad = []
    for path in _py_files("actors"):
        for line, level, module in _imports(path):
            top = module.split(".")[0]
            if level == 0 and top == "mediaengine" and not (
                    module == "mediaengine.sdk" or module.startswith(("mediaengine.sdk.", "mediaengine.actors"))):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
            if level == 0 and top in ("engine", "actors"):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports the folder name {module!r}")
            if level > 1:
                bad.append(f"{path.relative_to(ROOT)}:{line}: relative import out of actors/ ({'.' * level}{module})")
    assert not bad, "actors/ may import only mediaengine.sdk:\n" + "\n".join(bad)


def test_the_sdk_imports_no_other_engine_layer() -> None:
    bad = []
    for path in _py_files("engine/sdk"):
        for line, level, module in _imports(path):
            if level >= 2 and module.split(".")[0] in LAYERS and module.split(".")[0] != "sdk":
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {'.' * level}{module}")
            if level == 0 and module.startswith("mediaengine") and not module.startswith("mediaengine.sdk"):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {module}")
    assert not bad, "mediaengine.sdk must stand alone:\n" + "\n".join(bad)


@pytest.mark.parametrize("folder", ["engine", "actors", "tests", "tools"])
def test_nothing_imports_the_folder_names_as_packages(folder: str) -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
           for path in _py_files(folder) for line, level, module in _imports(path)
           if level == 0 and module.split(".")[0] in ("engine", "actors")]
    assert not bad, "import mediaengine / mediaengine.actors instead:\n" + "\n".join(bad)


def test_engine_imports_itself_relatively() -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: imports {module}"
           for path in _py_files("engine") for line, level, module in _imports(path)
           if level == 0 and module.split(".")[0] == "mediaengine"]
    assert not bad, "inside engine/, import relatively (mypy reads engine/ as the package):\n" + "\n".join(bad)
