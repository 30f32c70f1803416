"""Fixtures shared by the fault tests."""

from tests.enginekit import engine_runner

__all__ = ["engine_runner"]
