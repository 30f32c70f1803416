"""The `mediaengine` command line: run, validate, graph, ps, monitor, ctl, fault, play, kinds, schema, keys."""

from .main import main

__all__ = ["main"]
