"""`engine.__all__` stays honest: every name resolves, is documented, and is the object it claims."""

from __future__ import annotations

import mediaengine as engine
from mediaengine.sdk import errors as _errors


def test_every_exported_name_resolves_and_is_documented() -> None:
    assert len(engine.__all__) == len(set(engine.__all__))
    for name in engine.__all__:
        obj = getattr(engine, name)
        assert obj is not None, name
        if isinstance(obj, type):
            assert obj.__doc__, f"{name} has no docstring"


def test_exported_errors_are_the_hierarchy_classes() -> None:
    for name in engine.__all__:
        obj = getattr(engine, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert obj is getattr(_errors, name)
            assert obj.code in _errors.ERRORS_BY_CODE


def test_engine_api_classes_load_lazily() -> None:
    from mediaengine.control.api import AsyncEngine, Engine

    assert engine.Engine is Engine and engine.AsyncEngine is AsyncEngine


def test_every_exported_name_has_a_home() -> None:
    # the lazy table and __all__ name the same things: a name added to one only fails here, not in a user's code
    assert set(engine._HOME) == set(engine.__all__)


def test_importing_the_package_loads_no_numpy() -> None:
    # `mediaengine ps` imports the package, the CLI and the control client; numpy (~0.3 s, more on a loaded
    # machine) is for actors only
    import subprocess
    import sys

    code = "import sys, mediaengine, mediaengine.cli.main, mediaengine.control.client; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out
