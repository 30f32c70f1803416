"""Fixtures shared by the integration tests."""

from tests.enginekit import engine_runner, runtime_dir

__all__ = ["engine_runner", "runtime_dir"]
