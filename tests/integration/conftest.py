"""Fixtures shared by the integration tests."""

from tests.enginekit import engine_runner

__all__ = ["engine_runner"]
