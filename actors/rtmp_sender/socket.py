"""The socket under FFmpeg's RTMP client: found through /proc, its unsent and acknowledged bytes read
with ioctls, shut down to break a blocked write, and a Python probe of the server before FFmpeg
connects (part of the rtmp_sender kind).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import ssl
import struct
import termios
import time
from collections.abc import Iterator

from mediaengine.sdk.errors import TlsError


def _proc_net_inodes(port: int, addresses: set[str]) -> set[int]:
    """Inodes of TCP sockets (any process) whose remote end is `port` on one of `addresses`."""
    inodes: set[int] = set()
    for path, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            ip_hex, _, port_hex = fields[2].partition(":")
            if int(port_hex, 16) != port:
                continue
            if addresses and _hex_ip(ip_hex, v6) not in addresses:
                continue
            inode = int(fields[9])
            if inode:
                inodes.add(inode)
    return inodes


def _hex_ip(ip_hex: str, v6: bool) -> str:
    raw = bytes.fromhex(ip_hex)
    if not v6:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    if words[:12] == b"\x00" * 10 + b"\xff\xff":  # v4-mapped
        return socket.inet_ntop(socket.AF_INET, words[12:])
    return socket.inet_ntop(socket.AF_INET6, words)


def find_socket(port: int, addresses: set[str]) -> tuple[int, int] | None:
    """(fd, inode) of this process's TCP socket connected to `port` on one of `addresses`, or None."""
    inodes = _proc_net_inodes(port, addresses)
    if not inodes:
        return None
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for name in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            return int(name), int(target[8:-1])
    return None


def _same_socket(fd: int, inode: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == f"socket:[{inode}]"
    except OSError:
        return False


@contextlib.contextmanager
def _borrowed(fd: int, inode: int) -> Iterator[socket.socket | None]:
    """FFmpeg's socket as a Python socket object for one call, or None when the fd is no longer that
    socket (or not a socket).  The object is detached afterwards: the fd stays FFmpeg's."""
    if not _same_socket(fd, inode):
        yield None
        return
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        yield None
        return
    try:
        yield sock
    finally:
        sock.detach()


def socket_stats(fd: int, inode: int) -> tuple[int, int] | None:
    """(unsent bytes (SIOCOUTQ: not yet acknowledged), bytes acknowledged by the peer) or None."""
    with _borrowed(fd, inode) as sock:
        if sock is None:
            return None
        try:
            buf = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0" * 4)  # TIOCOUTQ == SIOCOUTQ on sockets
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        except OSError:
            return None
    outq = struct.unpack("i", buf)[0]
    acked = struct.unpack_from("<Q", info, 120)[0] if len(info) >= 128 else 0  # tcpi_bytes_acked
    return outq, acked


def limit_in_flight(fd: int, inode: int, bytes_per_s: float, slack_s: float, floor: int) -> int | None:
    """Let FFmpeg's socket hold at most one round trip plus `slack_s` of `bytes_per_s`, sent or not
    (SO_SNDBUF bounds both), but never less than `floor` bytes: beyond that its writes wait, and the
    queue stays in the sender's backlog, where a cut can still drop stale video.  Without a bound TCP
    keeps 100 KB or more in flight, which a bottleneck's queue holds (or drops) and no decision can
    take back.  The round trip is TCP's smoothed one now (TCP_INFO), not its minimum: a queue that
    other traffic keeps standing at the bottleneck is part of every round trip, and a bound without
    it would throttle the stream under the rate it plans.  Returns the bound set, None if the socket
    is gone."""
    with _borrowed(fd, inode) as sock:
        if sock is None:
            return None
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
            rtt_us = struct.unpack_from("<I", info, 68)[0] if len(info) >= 72 else 0  # tcpi_rtt
            nbytes = max(floor, int(bytes_per_s * (rtt_us / 1e6 + slack_s)))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, nbytes)  # the kernel doubles it for its overhead
        except OSError:
            return None
    return nbytes


def shutdown_socket(fd: int, inode: int) -> bool:
    """Shut FFmpeg's socket down (not close it: the fd stays FFmpeg's), so a blocked send fails now."""
    with _borrowed(fd, inode) as sock:
        if sock is None:
            return False
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
    return True


def probe_rtmp(scheme: str, host: str, port: int, timeout_s: float,
               tls_context: ssl.SSLContext | None = None) -> set[str]:
    """Is the server there and answering?  Connect, do TLS for rtmps, send the RTMP handshake's C0+C1
    and wait for the first byte of its answer, then close.  Blocking Python I/O (the GIL is free
    meanwhile, unlike during FFmpeg's connect).  Returns the server's IP addresses.

    For rtmps the server's certificate and host name are verified with `tls_context` (default: the
    system CAs): a server that fails raises `TlsError`, which is not retried.

    Raises OSError when nothing accepts the connection (ConnectionRefusedError, unreachable, DNS) or
    when the server stays silent past `timeout_s` (TimeoutError): the cases where FFmpeg would hang
    or fail anyway.  A server that answers in any way -- even by closing the connection or with a TLS
    alert, as one that insists on another handshake might -- is alive: FFmpeg gets to try it.
    """
    deadline = time.monotonic() + timeout_s

    def left() -> float:
        return max(0.01, deadline - time.monotonic())

    addresses = {str(ai[4][0]) for ai in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    raw = socket.create_connection((host, port), timeout=left())
    sock: socket.socket = raw
    try:
        if scheme == "rtmps":
            ctx = tls_context if tls_context is not None else ssl.create_default_context()
            raw.settimeout(left())
            try:
                sock = ctx.wrap_socket(raw, server_hostname=host)
            except ssl.SSLCertVerificationError as e:
                raise TlsError(
                    f"rtmps server {host}:{port} is not trusted: {e.verify_message or e.reason}; give the "
                    "PEM file of its CA as ca_file, or set tls_verify: false for a self-signed test "
                    "server") from None
        sock.settimeout(left())
        sock.sendall(b"\x03" + bytes(8) + os.urandom(1528))
        sock.settimeout(left())
        sock.recv(1)  # S0, or an EOF: either way the server is answering
    except (TimeoutError, TlsError):
        raise
    except OSError:
        pass  # reset, TLS alert...: it answered
    finally:
        sock.close()
    return addresses
