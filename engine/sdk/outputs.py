"""Files named by a control command: checked against the topology's `output_dir`, written without
following links.  The one helper for every actor that writes a file a command names.

The control port must not become a way to write anywhere the engine user can (issue 9 item 2): a
command's path is taken relative to `output_dir` (topology key, default: the engine's working
directory) and refused with `OutputPathError` (1415) when it

- is empty, holds a NUL byte, or a `..` component (even one that would come back inside),
- is absolute and not below `output_dir`,
- has a component that starts with `.` (no dotfiles: `.ssh/`, `.bashrc`, ...),
- does not end with one of the suffixes the actor writes (`.png` for `snapshot`),
- or meets a symbolic link on its way (`output_dir/link/x.png` where `link` points anywhere).

`check()` does the lexical part (at command time, so the client's reply carries the error);
`write()` walks the folders from `output_dir` one `openat(O_NOFOLLOW)` at a time, creating missing
ones, and writes a temporary file in the last one before renaming it over the name: a link swapped in
after `check()` still cannot send the bytes elsewhere.  Paths written from the topology file itself
(e.g. `recorder.path`) are the operator's choice and are not checked here.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import PurePosixPath

from .errors import FileError, OutputPathError

__all__ = ["OutputDir"]


@dataclass(frozen=True)
class OutputDir:
    """The directory commands may write into (absolute; its own symlinks, if any, are the operator's)."""

    root: str

    @classmethod
    def of(cls, path: str) -> OutputDir:
        return cls(os.path.realpath(os.path.abspath(path or ".")))

    def check(self, requested: str, suffixes: tuple[str, ...]) -> PurePosixPath:
        """`requested` as a path relative to the root, or OutputPathError naming the rule it breaks."""
        where = f"path {requested!r}"
        if not isinstance(requested, str) or not requested or "\0" in requested:
            raise OutputPathError("must be a non-empty file name", where=where)
        path = PurePosixPath(requested)
        if ".." in path.parts:
            raise OutputPathError(f"`..` is not allowed; give a path inside the output directory {self.root}",
                                  where=where)
        if path.is_absolute():
            root = PurePosixPath(self.root)
            if path != root and root not in path.parents:
                raise OutputPathError(f"is outside the output directory {self.root}; commands may only write "
                                      "there (set the topology's `output_dir` to change it)", where=where)
            path = path.relative_to(root)
        if not path.parts or path.name in ("", "."):
            raise OutputPathError("names the output directory, not a file", where=where)
        if any(part.startswith(".") for part in path.parts):
            raise OutputPathError("a hidden name (starting with `.`) is not allowed", where=where)
        if path.suffix.lower() not in suffixes:
            raise OutputPathError(f"must end with {' or '.join(suffixes)}", where=where)
        return path

    def absolute(self, relative: PurePosixPath) -> str:
        return os.path.join(self.root, *relative.parts)

    def write(self, relative: PurePosixPath, data: bytes, mode: int = 0o666) -> str:
        """Write `data` to `root/relative` atomically, never following a link; returns the absolute path.

        OutputPathError if a folder on the way is a symbolic link (or not a folder); FileError if the
        disk refuses (permissions, space)."""
        shown = self.absolute(relative)
        try:
            os.makedirs(self.root, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise FileError(f"cannot open the output directory {self.root}: {e}") from e
        try:
            for part in relative.parts[:-1]:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
                try:
                    sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as e:  # ELOOP: a link; ENOTDIR: a file (or a link on some systems)
                    raise OutputPathError(f"{part!r} on the way is a symbolic link or not a folder; commands "
                                          f"do not follow links below {self.root}", where=f"path {shown!r}") from e
                os.close(fd)
                fd = sub
            self._write_in(fd, relative.name, data, mode)
        except OutputPathError:  # a PermissionError (so an OSError) of its own: keep it as it is
            raise
        except OSError as e:
            raise FileError(f"cannot write {shown!r}: {e}; check the folder is writable") from e
        finally:
            os.close(fd)
        return shown

    @staticmethod
    def _write_in(dir_fd: int, name: str, data: bytes, mode: int) -> None:
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
        try:
            with os.fdopen(out, "wb") as f:
                f.write(data)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # replaces a link, never follows it
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            raise
