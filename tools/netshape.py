"""A shaped link for adaptive-bit-rate tests: a network namespace joined to this one by a veth pair,
with a `tc tbf` bottleneck on this side's end (engine -> server) whose rate can change while traffic
flows.  Needs root and `ip`/`tc` (iproute2); netem is not needed (and not available here).

    with ShapedLink(rate_kbit=4000) as link:         # namespace + veth + tbf, removed on exit
        server = RtmpServer(prefix, port, host=link.peer_ip, netns=link.netns)
        ...
        link.set_rate(1000)                           # tc qdisc change: takes effect at once

Names carry this process's pid, so parallel runs do not collide, and `close()` deletes everything it
created even when the test failed (deleting the namespace deletes the veth pair).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from types import TracebackType

BURST_KBIT = 32  # tbf bucket: a few packets (the notes' measured setting)
LATENCY_MS = 400  # tbf queue: packets beyond this much waiting are dropped (TCP backs off)


def available() -> str | None:
    """None when this process can build a shaped link, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (iproute2)"
    return None


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise OSError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")


class ShapedLink:
    """Namespace `netns` holding `peer_ip`; this namespace holds `local_ip`; egress from here is shaped."""

    def __init__(self, rate_kbit: int, *, tag: str = "") -> None:
        uid = f"{os.getpid() % 100000}{tag}"
        self.netns = f"meabr{uid}"
        self.local_dev = f"vab{uid}a"[:15]
        self.peer_dev = f"vab{uid}b"[:15]
        n = os.getpid() % 250 + 1
        self.local_ip = f"10.213.{n}.1"
        self.peer_ip = f"10.213.{n}.2"
        self.rate_kbit = rate_kbit
        self.changes: list[tuple[float, int]] = []  # (time.time(), kbit/s) of every rate set
        self._up = False

    def open(self) -> ShapedLink:
        try:
            _run("ip", "netns", "add", self.netns)
            self._up = True
            _run("ip", "link", "add", self.local_dev, "type", "veth", "peer", "name", self.peer_dev)
            _run("ip", "link", "set", self.peer_dev, "netns", self.netns)
            _run("ip", "addr", "add", f"{self.local_ip}/30", "dev", self.local_dev)
            _run("ip", "link", "set", self.local_dev, "up")
            ns = ("ip", "netns", "exec", self.netns)
            _run(*ns, "ip", "addr", "add", f"{self.peer_ip}/30", "dev", self.peer_dev)
            _run(*ns, "ip", "link", "set", self.peer_dev, "up")
            _run(*ns, "ip", "link", "set", "lo", "up")
            _run("tc", "qdisc", "add", "dev", self.local_dev, "root", "tbf", *self._tbf(self.rate_kbit))
            self.changes.append((time.time(), self.rate_kbit))
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def _tbf(rate_kbit: int) -> tuple[str, ...]:
        return ("rate", f"{rate_kbit}kbit", "burst", f"{BURST_KBIT}kbit", "latency", f"{LATENCY_MS}ms")

    def set_rate(self, rate_kbit: int) -> float:
        """Change the bottleneck now; returns the wall-clock time of the change."""
        _run("tc", "qdisc", "change", "dev", self.local_dev, "root", "tbf", *self._tbf(rate_kbit))
        t = time.time()
        self.rate_kbit = rate_kbit
        self.changes.append((t, rate_kbit))
        return t

    def exec_prefix(self) -> list[str]:
        """Prefix a command with this to run it inside the namespace (the server side)."""
        return ["ip", "netns", "exec", self.netns]

    def close(self) -> None:
        if not self._up:
            return
        self._up = False
        subprocess.run(["ip", "link", "del", self.local_dev], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=10, check=False)

    def __enter__(self) -> ShapedLink:
        return self.open()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
