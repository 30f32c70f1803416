"""Fixtures shared by the fault tests."""

from tests.enginekit import engine_runner, runtime_dir

__all__ = ["engine_runner", "runtime_dir"]
