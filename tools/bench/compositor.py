"""Benchmark `compositor`, registered on its own until the `effects` benchmark takes its rows: the
measurement lives in `effects_compositor.py` (`compositor_rows` for an effects table, `run` here)."""

from __future__ import annotations

from .effects_compositor import NAME, compositor_rows, run

__all__ = ["NAME", "compositor_rows", "run"]
