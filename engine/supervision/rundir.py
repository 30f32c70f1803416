"""Per-engine runtime directories: where sockets and the engine's description live.

Each running engine gets ``<base>/<engine_id>/`` (mode 0700) holding its ZeroMQ ipc sockets and an
``engine.json`` (pid, topology, endpoints) that `mediaengine ps` and monitors read.  The base is
``$MEDIAENGINE_RUNTIME_DIR`` or ``$XDG_RUNTIME_DIR/mediaengine`` or ``/tmp/mediaengine-<uid>``.

A dead engine (SIGKILLed) leaves its directory and shared-memory segments behind; `reap_stale`
removes both and kills any actor process still recorded for it.  Every engine start calls it.

Nothing here trusts the file system blindly (docs/security.md, "Runtime directory"): the base must be
a directory (not a symbolic link) owned by this user and writable by nobody else, or `base_dir` raises
`RuntimeDirError` (1310) naming the fix; one we own that others may only read is tightened to 0700.
`/tmp/mediaengine-<uid>` can be created first by another local user, who could then plant an
engine.json: refused.  And a pid read from an engine.json is killed only if that process carries our
marker in its environment (`MEDIAENGINE_ENGINE_ID=<engine id>`, which every actor inherits from the
supervisor) and still has the recorded start time: a planted file cannot make us kill anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..sdk.errors import RuntimeDirError

#: environment variable naming the engine an actor belongs to (set by the supervisor for its actors)
ENGINE_MARKER = "MEDIAENGINE_ENGINE_ID"

_FIX = ("set MEDIAENGINE_RUNTIME_DIR (or XDG_RUNTIME_DIR) to a directory of your own with mode 0700, "
        "or remove it if you did not create it")


def check_private(path: Path) -> None:
    """`path` is a real directory, owned by this user, that nobody else may write; RuntimeDirError if not.
    One that others may read (but not write) is made 0700: nothing can have been planted in it."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise RuntimeDirError(f"cannot inspect the runtime directory: {exc}; {_FIX}", where=str(path)) from None
    if stat.S_ISLNK(st.st_mode):
        raise RuntimeDirError(f"the runtime directory is a symbolic link (to {os.readlink(path)!r}); {_FIX}",
                              where=str(path))
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirError(f"the runtime directory is not a directory; {_FIX}", where=str(path))
    if st.st_uid != os.getuid():
        raise RuntimeDirError(f"the runtime directory belongs to uid {st.st_uid}, not to this user "
                              f"(uid {os.getuid()}); another user may have created it; {_FIX}", where=str(path))
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise RuntimeDirError(f"the runtime directory has mode {mode:04o}: other users can write into it "
                              f"(and plant an engine.json); {_FIX}", where=str(path))
    if mode & 0o077:
        os.chmod(path, 0o700)


def base_dir() -> Path:
    env = os.environ.get("MEDIAENGINE_RUNTIME_DIR")
    if env:
        base = Path(env)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "mediaengine"
    else:
        base = Path(tempfile.gettempdir()) / f"mediaengine-{os.getuid()}"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise RuntimeDirError(f"cannot create the runtime directory: {exc}; {_FIX}", where=str(base)) from None
    check_private(base)
    return base


def new_engine_id() -> str:
    return secrets.token_hex(4)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still "exists": treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class RunDir:
    engine_id: str
    path: Path

    @classmethod
    def create(cls, engine_id: str | None = None) -> RunDir:
        engine_id = engine_id or new_engine_id()
        path = base_dir() / engine_id
        path.mkdir(mode=0o700)
        os.chmod(path, 0o700)
        return cls(engine_id, path)

    def endpoint(self, name: str) -> str:
        return f"ipc://{self.path / name}"

    @property
    def info_path(self) -> Path:
        return self.path / "engine.json"

    def write_info(self, info: dict[str, Any]) -> None:
        tmp = self.info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        tmp.replace(self.info_path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def read_info(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((path / "engine.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def engine_alive(info: dict[str, Any]) -> bool:
    pid = int(info.get("pid", 0))
    if not pid_alive(pid):
        return False
    started = info.get("pid_start")
    return started is None or _start_time(pid) == started


def _engine_dirs(base: Path) -> list[Path]:
    """The per-engine directories under `base`: real directories of this user only."""
    found = []
    for child in sorted(base.iterdir()):
        try:
            st = os.lstat(child)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
            found.append(child)
    return found


def is_our_actor(pid: int, engine_id: str, started: Any) -> bool:
    """`pid` is alive, still the process started at `started`, and an actor of engine `engine_id`
    (its environment carries `MEDIAENGINE_ENGINE_ID=<engine_id>`; /proc/<pid>/environ is readable for
    this user's processes only)."""
    if not pid_alive(pid) or started is None or _start_time(pid) != started:
        return False
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
    except OSError:
        return False
    return f"{ENGINE_MARKER}={engine_id}".encode() in env


def running_engines() -> list[dict[str, Any]]:
    """engine.json of every live engine of this user, oldest first."""
    out = []
    for child in _engine_dirs(base_dir()):
        info = read_info(child)
        if info is not None and engine_alive(info):
            out.append(info)
    return sorted(out, key=lambda i: float(i.get("started_at", 0)))


def reap_stale() -> list[str]:
    """Remove what dead engines left: actor processes, shm segments, runtime dirs.  Returns their ids."""
    reaped = []
    for child in _engine_dirs(base_dir()):
        info = read_info(child)
        if info is not None and engine_alive(info):
            continue
        if info is None:
            # no engine.json yet: maybe an engine starting right now; leave it unless clearly old
            try:
                if time.time() - child.stat().st_mtime < 60:
                    continue
            except OSError:
                continue
        actors = (info or {}).get("actors", {})
        for actor in actors.values() if isinstance(actors, dict) else ():
            try:
                pid, started = int(actor.get("pid", 0)), actor.get("pid_start")
            except (AttributeError, TypeError, ValueError):
                continue
            if is_our_actor(pid, child.name, started):  # never a pid the file merely names
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        from ..runtime.ring import unlink_segments  # numpy: only when a dead engine left something

        unlink_segments(child.name)
        shutil.rmtree(child, ignore_errors=True)
        reaped.append(child.name)
    return reaped


def process_start_time(pid: int) -> int | None:
    return _start_time(pid)


def processes_with_env(marker: str) -> list[int]:
    """PIDs of live, non-zombie processes whose environment holds `marker` (e.g. a runtime dir)."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env and state != "Z":
            found.append(int(entry))
    return found
