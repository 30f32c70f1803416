"""A local RTMP server (nginx with the RTMP module) for trying a push and for the tests.

It runs Debian's `nginx` with its own prefix directory, config, pid file and logs, listening on
127.0.0.1 only, so it needs no root, no system service and no port that another test uses.  The same
class backs the test fixtures (start, push, kill, restart on the same port) and the command line::

    python -m tools.rtmp_server start [--port 1935] [--prefix out/rtmp-server] [--hls] [--background]
    python -m tools.rtmp_server status [--prefix DIR]
    python -m tools.rtmp_server stop [--prefix DIR]

`start` runs in the foreground until Ctrl-C unless `--background` is given.  Besides RTMP, an HTTP
server on 127.0.0.1 serves `/stat` (nginx-rtmp's XML statistics) and, with `--hls`, `/hls/<stream>.m3u8`.

Needs `apt-get install nginx libnginx-mod-rtmp`; without them `start` raises `ResourceError` saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import NoReturn

import psutil
from mediaengine.sdk.errors import ResourceError

RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
INSTALL_HINT = "apt-get install nginx libnginx-mod-rtmp"
HOST = "127.0.0.1"
STATE_FILE = "server.json"  # written by the CLI so `status` and `stop` find a running server


def free_port(host: str = HOST) -> int:
    """A TCP port that is free on `host` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_accepts(port: int, host: str = HOST, timeout_s: float = 0.2) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def render_config(
    prefix: Path,
    *,
    port: int,
    http_port: int,
    hls: bool,
    drop_idle_publisher_s: float,
    module: Path = RTMP_MODULE,
    as_root: bool = False,
    host: str = HOST,
) -> str:
    """The nginx.conf text: one `live` application on 127.0.0.1:port, /stat and /hls over HTTP."""
    p = prefix.resolve()
    hls_lines = (
        f"            hls on;\n"
        f"            hls_path {p / 'hls'};\n"
        f"            hls_fragment 1s;\n"
        f"            hls_playlist_length 4s;\n"
        if hls
        else ""
    )
    # Workers of a root master run as `nobody` by default, which cannot write the HLS files under a
    # private (0700) prefix; run them as root too.  Without root the directive would only warn.
    user_line = "user root root;\n" if as_root else ""
    idle_ms = max(1, round(drop_idle_publisher_s * 1000))
    temp = p / "tmp"
    return (
        f"load_module {module};\n"
        f"daemon off;\n"
        f"master_process on;\n"
        f"worker_processes 1;\n"
        f"{user_line}"
        f"pid {p / 'nginx.pid'};\n"
        f"lock_file {p / 'nginx.lock'};\n"
        f"error_log {p / 'error.log'} info;\n"
        f"events {{ worker_connections 256; }}\n"
        f"rtmp {{\n"
        f"    server {{\n"
        f"        listen {host}:{port};\n"
        f"        application live {{\n"
        f"            live on;\n"
        f"            record off;\n"
        f"            drop_idle_publisher {idle_ms}ms;\n"
        f"{hls_lines}"
        f"        }}\n"
        f"    }}\n"
        f"}}\n"
        f"http {{\n"
        f"    access_log off;\n"
        f"    client_body_temp_path {temp / 'body'};\n"
        f"    proxy_temp_path {temp / 'proxy'};\n"
        f"    fastcgi_temp_path {temp / 'fastcgi'};\n"
        f"    uwsgi_temp_path {temp / 'uwsgi'};\n"
        f"    scgi_temp_path {temp / 'scgi'};\n"
        f"    server {{\n"
        f"        listen {host}:{http_port};\n"
        f"        location /stat {{ rtmp_stat all; }}\n"
        f"        location /hls {{\n"
        f"            types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}\n"
        f"            alias {p / 'hls'};\n"
        f"            add_header Cache-Control no-cache;\n"
        f"        }}\n"
        f"    }}\n"
        f"}}\n"
    )


@dataclass(frozen=True)
class StreamClient:
    """One connection on a stream, as nginx's /stat reports it."""

    id: int
    address: str
    publishing: bool


def _group_alive(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    alive = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def _wait_gone(proc: psutil.Process, timeout_s: float) -> bool:
    """Wait until `proc` (not necessarily our child) has exited; a zombie counts as exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def _kill_group(pgid: int, timeout_s: float = 3.0) -> None:
    """SIGKILL a whole process group and wait (bounded) until none of it is running."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


class RtmpServer:
    """nginx-rtmp on 127.0.0.1 with everything under `prefix`; `port=0` picks a free port.

    The ports are fixed at construction, so `url()` works before `start()` and `restart()` comes
    back on the same port.  Use as a context manager or call `stop()` in a `finally`.
    """

    def __init__(
        self,
        prefix: Path,
        port: int = 0,
        *,
        hls: bool = False,
        http_port: int = 0,
        drop_idle_publisher_s: float = 5.0,
        nginx_bin: Path | str | None = None,
        module_path: Path = RTMP_MODULE,
        host: str = HOST,
        netns: str | None = None,
    ) -> None:
        """`host` and `netns`: listen on `host` inside network namespace `netns` (`ip netns exec`, as
        root), e.g. behind a shaped veth link; `port` must then be given (free in that namespace)."""
        self._prefix = Path(prefix).resolve()
        self._auto_port, self._auto_http_port = port == 0, http_port == 0
        self._port = port or free_port()
        self._http_port = http_port or free_port()
        self._hls = hls
        self._drop_idle_publisher_s = drop_idle_publisher_s
        self._nginx_bin = Path(nginx_bin or shutil.which("nginx") or "/usr/sbin/nginx")
        self._module_path = Path(module_path)
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        self._host = host
        self._netns = netns

    # -- properties ---------------------------------------------------------------------------------
    @property
    def prefix(self) -> Path:
        return self._prefix

    @property
    def port(self) -> int:
        return self._port

    @property
    def http_port(self) -> int:
        return self._http_port

    @property
    def pid(self) -> int | None:
        """The nginx master's pid while it runs, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def hls(self) -> bool:
        return self._hls

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def error_log(self) -> Path:
        return self._prefix / "error.log"

    @property
    def hls_dir(self) -> Path:
        return self._prefix / "hls"

    @property
    def stat_url(self) -> str:
        return f"http://{self._host}:{self._http_port}/stat"

    def url(self, app: str = "live", stream: str = "test") -> str:
        return f"rtmp://{self._host}:{self._port}/{app}/{stream}"

    def hls_url(self, stream: str = "test") -> str:
        return f"http://{self._host}:{self._http_port}/hls/{stream}.m3u8"

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, timeout_s: float = 5.0) -> None:
        """Write the config, start nginx as a child in its own process group, wait until it listens."""
        if self.running:
            raise RuntimeError(f"RTMP server already running (pid {self.pid})")
        self._check_installed()
        for attempt in range(3):
            try:
                busy = [p for p in (self._port, self._http_port) if not self._netns and not _can_bind(p)]
                if busy:
                    raise _AddressInUse(busy[0], f"port {busy[0]} on {HOST} is already in use")
                self._start_once(timeout_s)
                break
            except _AddressInUse as exc:
                # A port we picked ourselves may be taken by someone else meanwhile: pick again, but
                # never move a port the caller chose, nor one a restart must keep.
                may_repick = not self._started_once and attempt < 2
                if may_repick and exc.port == self._port and self._auto_port:
                    self._port = free_port()
                elif may_repick and exc.port == self._http_port and self._auto_http_port:
                    self._http_port = free_port()
                else:
                    raise ResourceError(str(exc), where="rtmp_server") from None
        self._started_once = True

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the master (nginx's fast shutdown), SIGKILL the group if it lingers. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                proc.wait()
        _kill_group(proc.pid)  # workers orphaned by an earlier crash of the master, if any

    def kill(self) -> None:
        """SIGKILL nginx (master and workers) at once, as a crash would; reaps it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _kill_group(proc.pid)
        proc.wait()

    def restart(self, timeout_s: float = 5.0) -> None:
        """Stop if running, then start again on the same ports."""
        self.stop()
        self.start(timeout_s)

    def __enter__(self) -> RtmpServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- statistics ---------------------------------------------------------------------------------
    def stat(self, timeout_s: float = 2.0) -> ET.Element:
        """nginx-rtmp's /stat document, parsed."""
        with urllib.request.urlopen(self.stat_url, timeout=timeout_s) as resp:
            return ET.fromstring(resp.read())

    def clients(self, stream: str = "test", app: str = "live") -> list[StreamClient]:
        """Connections (publisher and players) on one stream; empty if the stream does not exist."""
        root = self.stat()
        for application in root.iter("application"):
            if application.findtext("name") != app:
                continue
            for st in application.iter("stream"):
                if st.findtext("name") == stream:
                    return [
                        StreamClient(
                            id=int(c.findtext("id", "0")),
                            address=c.findtext("address", ""),
                            publishing=c.find("publishing") is not None,
                        )
                        for c in st.findall("client")
                    ]
        return []

    # -- internals ----------------------------------------------------------------------------------
    def _check_installed(self) -> None:
        missing = [str(p) for p in (self._nginx_bin, self._module_path) if not p.is_file()]
        if missing:
            raise ResourceError(
                f"nginx with the RTMP module is needed, missing {', '.join(missing)}; install it with `{INSTALL_HINT}`",
                where="rtmp_server",
            )

    def _start_once(self, timeout_s: float) -> None:
        (self._prefix / "tmp").mkdir(parents=True, exist_ok=True)
        self.hls_dir.mkdir(exist_ok=True)
        conf = self._prefix / "nginx.conf"
        conf.write_text(
            render_config(
                self._prefix,
                port=self._port,
                http_port=self._http_port,
                hls=self._hls,
                drop_idle_publisher_s=self._drop_idle_publisher_s,
                module=self._module_path,
                as_root=os.geteuid() == 0,
                host=self._host,
            )
        )
        pid_file = self._prefix / "nginx.pid"
        pid_file.unlink(missing_ok=True)
        log_offset = self.error_log.stat().st_size if self.error_log.exists() else 0
        with open(self._prefix / "nginx.out", "ab") as out:
            netns = ["ip", "netns", "exec", self._netns] if self._netns else []  # exec: nginx keeps the pid
            proc = subprocess.Popen(
                [*netns, str(self._nginx_bin), "-p", f"{self._prefix}/", "-e", str(self.error_log), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # nginx binds its listening sockets before it writes the pid file, so both together mean ready.
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    self._fail_start(proc, log_offset, f"nginx exited with status {proc.returncode}")
                if (_read_pid(pid_file) == proc.pid and port_accepts(self._port, self._host)
                        and port_accepts(self._http_port, self._host)):
                    self._proc = proc
                    return
                time.sleep(0.01)
        except BaseException:  # interrupted (Ctrl-C, a test timeout): do not leave nginx behind
            if proc.poll() is None:
                _kill_group(proc.pid)
                proc.wait()
            raise
        self._fail_start(proc, log_offset, f"nginx did not accept connections within {timeout_s:g} s")

    def _fail_start(self, proc: subprocess.Popen[bytes], log_offset: int, what: str) -> NoReturn:
        _kill_group(proc.pid)
        proc.wait()
        log = ""
        if self.error_log.exists():
            with open(self.error_log, "rb") as f:
                f.seek(log_offset)
                log = f.read().decode(errors="replace")
        out = (self._prefix / "nginx.out").read_text(errors="replace")
        severe = ("[emerg]", "[alert]", "[crit]")
        errors = [ln for ln in (log + out).splitlines() if any(s in ln for s in severe)]
        detail = "\n".join(errors[-5:]) or log[-2000:]
        message = f"{what} (ports {self._port}/{self._http_port}, log {self.error_log}):\n{detail}"
        in_use = re.search(r"bind\(\) to [0-9.]+:(\d+) failed \(98", detail)
        if in_use:
            raise _AddressInUse(int(in_use.group(1)), message)
        raise ResourceError(message, where="rtmp_server")


class _AddressInUse(Exception):
    """nginx could not bind `port` (it is in use)."""

    def __init__(self, port: int, message: str) -> None:
        super().__init__(message)
        self.port = port


def _can_bind(port: int, host: str = HOST) -> bool:
    """True if a listening socket could bind host:port now (with SO_REUSEADDR, as nginx does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


# -- command line -----------------------------------------------------------------------------------
def _state(prefix: Path) -> dict[str, int] | None:
    """The running CLI server recorded under `prefix`, or None if none runs there."""
    try:
        state: dict[str, int] = json.loads((prefix / STATE_FILE).read_text())
        proc = psutil.Process(state["pid"])
        alive = proc.status() != psutil.STATUS_ZOMBIE and str(prefix) in " ".join(proc.cmdline())
    except (FileNotFoundError, ValueError, KeyError, psutil.Error):
        return None
    return state if alive else None


def _print_usage_hint(server: RtmpServer) -> None:
    print(f"RTMP server running (pid {server.pid}), prefix {server.prefix}")
    print(f"  push to   {server.url()}")
    print(f"  stats     {server.stat_url}")
    if server.hls:
        print(f"  HLS       {server.hls_url()}")
    print(
        f"  try it:   ffmpeg -re -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine "
        f"-c:v libx264 -preset veryfast -g 60 -c:a aac -f flv {server.url()}"
    )
    print(f"  watch:    ffplay {server.url()}")


def _cmd_start(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix).resolve()
    if _state(prefix) is not None:
        print(f"already running under {prefix}; `python -m tools.rtmp_server stop --prefix {args.prefix}`")
        return 1
    server = RtmpServer(prefix, args.port, hls=args.hls, http_port=args.http_port)
    try:
        server.start()
    except ResourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    state = {"pid": server.pid, "port": server.port, "http_port": server.http_port}
    (prefix / STATE_FILE).write_text(json.dumps(state))
    _print_usage_hint(server)
    if args.background:
        print(f"stop it with: python -m tools.rtmp_server stop --prefix {args.prefix}")
        return 0

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_term)
    print("Ctrl-C stops it.")
    try:
        assert server._proc is not None
        code = server._proc.wait()
        if code != 0:
            print(f"nginx exited with status {code}; see {server.error_log}", file=sys.stderr)
        return 0 if code == 0 else 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
        (prefix / STATE_FILE).unlink(missing_ok=True)


def _cmd_stop(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix).resolve()
    state = _state(prefix)
    if state is None:
        print(f"no RTMP server running under {prefix}")
        return 0
    proc = psutil.Process(state["pid"])
    proc.terminate()
    if not _wait_gone(proc, 5.0):
        _kill_group(state["pid"])
    (prefix / STATE_FILE).unlink(missing_ok=True)
    print(f"stopped RTMP server (pid {state['pid']})")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix).resolve()
    state = _state(prefix)
    if state is None:
        print(f"no RTMP server running under {prefix}")
        return 1
    print(
        f"running (pid {state['pid']}): rtmp://{HOST}:{state['port']}/live/<stream>, "
        f"stats http://{HOST}:{state['http_port']}/stat"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.rtmp_server", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("start", "start a server"), ("stop", "stop it"), ("status", "is it running?")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--prefix", default="out/rtmp-server", help="directory for config, logs, pid, HLS")
        if name == "start":
            p.add_argument("--port", type=int, default=1935, help="RTMP port on 127.0.0.1 (0 = any free)")
            p.add_argument("--http-port", type=int, default=0, help="HTTP port for /stat and /hls (0 = any)")
            p.add_argument("--hls", action="store_true", help="also write HLS, served at /hls/<stream>.m3u8")
            p.add_argument("--background", action="store_true", help="return after starting")
    args = parser.parse_args(argv)
    return {"start": _cmd_start, "stop": _cmd_stop, "status": _cmd_status}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
