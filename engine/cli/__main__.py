"""`python -m mediaengine.cli ...` is the `mediaengine` command."""

from .main import entry

entry()
