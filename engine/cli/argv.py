"""Keep secrets given on the command line out of `/proc/<pid>/cmdline`, which every local user can read.

`mediaengine run FILE --set push.url=rtmp://host/live/KEY` and `mediaengine play rtmp://host/live/KEY`
put the key in the process's argument block.  Three things keep it private:

- `--set` values and the `play` URL accept `${VAR}` (quote it: `--set 'push.url=${PUSH_URL}'`), so the
  key can stay in the environment (readable by this user only) and never be an argument;
- `Engine.start(overrides=...)` hands its overrides to the engine process in the environment variable
  `MEDIAENGINE_SET` (a JSON list of `node.option=value`), never as arguments;
- when a key was typed literally anyway, `hide_in_argv` overwrites it with ``*`` in the process's own
  argument block (through `/proc/self/mem`, as `setproctitle` does) as soon as the topology is loaded.
  The key is visible from exec to that moment (a few hundred milliseconds): docs/security.md says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence

from ..sdk.errors import OptionError
from ..sdk.redact import SHORT_SECRET

__all__ = ["SET_ENV", "hide_in_argv", "overrides_from_env"]

#: environment variable through which `Engine.start(overrides=...)` passes `--set` items
SET_ENV = "MEDIAENGINE_SET"


def overrides_from_env(given: Sequence[str] | None) -> list[str]:
    """`--set` items from the command line, then those of `$MEDIAENGINE_SET` (removed from the
    environment so that actors do not inherit it)."""
    items = list(given or ())
    raw = os.environ.pop(SET_ENV, None)
    if raw:
        try:
            extra = json.loads(raw)
        except ValueError as exc:
            raise OptionError(f"${SET_ENV} must be a JSON list of 'node.option=value' strings: {exc}") from None
        if not isinstance(extra, list) or not all(isinstance(i, str) for i in extra):
            raise OptionError(f"${SET_ENV} must be a JSON list of 'node.option=value' strings")
        items += extra
    return items


def _arg_area() -> tuple[int, int]:
    """(arg_start, arg_end) of this process: fields 48 and 49 of /proc/self/stat (Linux >= 3.5)."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[45]), int(fields[46])


def hide_in_argv(secrets: Iterable[str]) -> bool:
    """Overwrite every secret (of 6 characters or more) in this process's argument block with ``*``
    (same length, so `ps` and `/proc/<pid>/cmdline` keep their shape).  True if the block was rewritten
    or held no secret; False where it cannot be done (not Linux, /proc/self/mem not writable): best
    effort, never an error."""
    # a short value (a `${VAR}` of "30") would mask every "30" of the command line: keys are longer
    needles = sorted({s.encode() for s in secrets if len(s) >= SHORT_SECRET}, key=len, reverse=True)
    if not needles:
        return True
    try:
        start, end = _arg_area()
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            block = mem.read(end - start)
            masked = block
            for needle in needles:
                masked = masked.replace(needle, b"*" * len(needle))
            if masked != block:
                mem.seek(start)
                mem.write(masked)
    except (OSError, ValueError, IndexError):
        return False
    return True
