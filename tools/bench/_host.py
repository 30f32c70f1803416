"""`python -m tools.bench._host run FILE ...`: the real `mediaengine` CLI, plus the benchmark kinds.

It registers `tools.bench._kinds` in this process (the topology loader checks kinds here) and appends
it to the supervisor's fork-server preload list, so the actor processes forked from the fork server
know the kinds too.  `MEDIAENGINE_BENCH_PRELOAD` (comma-separated module names) adds more such
modules, e.g. a plugin's kinds under trial.  Everything else is the unchanged engine.

Keep the module body to `from mediaengine.cli.main import main`: multiprocessing re-runs the main module (as
`__mp_main__`) in every process the fork server starts, so whatever this body imports is paid at
every actor (re)start.  With only that import, an actor started through this host pays what one
started by `python -m mediaengine.cli.main` pays (which re-runs engine/cli.py); the rest is under the guard.
"""

from __future__ import annotations

from mediaengine.cli.main import main

if __name__ == "__main__":
    import importlib
    import os
    import sys

    from mediaengine.supervision import supervisor as _supervisor

    from . import _kinds  # noqa: F401  (registers the kinds)

    extra = [m.strip() for m in os.environ.get("MEDIAENGINE_BENCH_PRELOAD", "").split(",") if m.strip()]
    for name in extra:
        importlib.import_module(name)
    _supervisor.PRELOAD = [*_supervisor.PRELOAD, "tools.bench._kinds", *extra]
    sys.exit(main())
