"""CURVE keys: what it takes to expose an engine's control and events endpoints beyond this machine.

By default an engine listens on `ipc://` sockets in its 0700 runtime directory, reachable only by its
user.  Binding a TCP address that is not loopback is refused unless the engine has CURVE keys; with
keys its control ROUTER and events PUB are CURVE servers and only clients whose public key is in the
authorized directory get an answer (the supervisor's ZAP handler, engine/supervision/zap.py, checks
them)::

    mediaengine keys -o keys/
    mediaengine run FILE --control tcp://0.0.0.0:5555 --events tcp://0.0.0.0:5556 --curve-keys keys/
    mediaengine monitor tcp://HOST:5555 --events tcp://HOST:5556 --curve-keys keys/

A keys directory uses ZeroMQ's certificate format (`zmq.auth.load_certificate` reads it)::

    server.key           server public key         (clients need it)
    server.key_secret    server public + secret    (engine side only)
    client.key           client public key
    client.key_secret    client public + secret    (client side only)
    authorized_clients/  *.key public keys the engine answers (re-read at every connection)

Every file is created 0600 and the directories 0700.  The engine's own actors never use these keys: they
connect to a socket of their own with keypairs made for that run only (engine/supervision/zap.py).

TCP is never private, not even on loopback (every local user can connect to 127.0.0.1): a TCP control
or events endpoint needs CURVE keys, or, on a loopback address only, an explicit `--insecure-loopback`
that the engine warns about.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

from ..sdk.errors import FileError, InsecureEndpointError
from .zap import CLIENTS_DOMAIN

SERVER = "server"
CLIENT = "client"
AUTHORIZED = "authorized_clients"

_BANNER = ("#   ****  Generated on {now:%Y-%m-%d %H:%M:%S} by mediaengine keys  ****\n"
           "#   ZeroMQ CURVE {what} Certificate\n"
           "{warning}\n")


# ---- who may bind where -------------------------------------------------------------------------

def is_local_endpoint(endpoint: str) -> bool:
    """True for endpoints only this machine can reach: ipc, inproc and tcp on a loopback address."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        return False
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    host = host.split(";")[-1].strip("[]")  # "src;dst" connect syntax, [IPv6]
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: assume it is reachable from outside


def check_exposure(endpoints: Iterable[str | None], curve_keys: str | os.PathLike[str] | None,
                   *, insecure_loopback: bool = False) -> list[str]:
    """Refuse, before anything binds, a TCP endpoint without CURVE keys.

    Beyond loopback keys are always needed; on loopback `insecure_loopback` lets it pass.  Returns the
    endpoints that are open to every local user (the caller warns about them).
    """
    if curve_keys is not None:
        return []
    open_locally = []
    for ep in endpoints:
        if not ep or ep.startswith(("ipc://", "inproc://")):
            continue
        if not is_local_endpoint(ep):
            raise InsecureEndpointError(
                f"binding {ep} would expose the engine beyond this machine without authentication; "
                "create keys with `mediaengine keys -o DIR` and add `--curve-keys DIR`, or bind a "
                "loopback address such as tcp://127.0.0.1:PORT")
        if not insecure_loopback:
            raise InsecureEndpointError(
                f"binding {ep} without keys would let every local user drive the engine (loopback TCP is "
                "not private); create keys with `mediaengine keys -o DIR` and add `--curve-keys DIR`, use "
                "the default ipc endpoint, or accept the risk with --insecure-loopback")
        open_locally.append(ep)
    return open_locally


def connectable(endpoint: str, host: str | None = None) -> str:
    """The endpoint a client connects to for a bound one: `*`/0.0.0.0 become `host` (default loopback)."""
    scheme, sep, rest = endpoint.partition("://")
    if scheme != "tcp" or not sep or ":" not in rest:
        return endpoint
    bound, port = rest.rsplit(":", 1)
    if bound.strip("[]") in ("*", "0.0.0.0", "::"):
        return f"tcp://{host or '127.0.0.1'}:{port}"
    return endpoint


# ---- key files -------------------------------------------------------------------------------------

def _write_cert(path: Path, public: bytes, secret: bytes | None) -> None:
    what, warning = ("**Secret**", "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.") \
        if secret else ("Public", "#   ZeroMQ CURVE Public Certificate: give this file to the other side.")
    text = _BANNER.format(now=datetime.datetime.now(), what=what, warning=warning)
    text += "metadata\ncurve\n" + f'    public-key = "{public.decode()}"\n'
    if secret:
        text += f'    secret-key = "{secret.decode()}"\n'
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


def generate_keys(out_dir: str | os.PathLike[str], *, force: bool = False) -> dict[str, Path]:
    """Write a server and a client keypair (and authorize the client) into `out_dir`; returns the paths."""
    out = Path(out_dir)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    (out / AUTHORIZED).mkdir(mode=0o700, exist_ok=True)
    os.chmod(out / AUTHORIZED, 0o700)
    paths = {
        "server_public": out / f"{SERVER}.key",
        "server_secret": out / f"{SERVER}.key_secret",
        "client_public": out / f"{CLIENT}.key",
        "client_secret": out / f"{CLIENT}.key_secret",
        "authorized_client": out / AUTHORIZED / f"{CLIENT}.key",
    }
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise FileError(f"keys exist already ({', '.join(existing)}); use --force to replace them",
                        where=str(out))
    for p in paths.values():
        p.unlink(missing_ok=True)
    server_pub, server_sec = zmq.curve_keypair()
    client_pub, client_sec = zmq.curve_keypair()
    _write_cert(paths["server_public"], server_pub, None)
    _write_cert(paths["server_secret"], server_pub, server_sec)
    _write_cert(paths["client_public"], client_pub, None)
    _write_cert(paths["client_secret"], client_pub, client_sec)
    _write_cert(paths["authorized_client"], client_pub, None)
    return paths


def _load(path: Path, *, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, sec = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise FileError(f"cannot read CURVE key: {exc}; create keys with `mediaengine keys -o DIR`",
                        where=str(path)) from None
    if secret and not sec:
        raise FileError("holds no secret key", where=str(path))
    return public, sec


# ---- server side (the supervisor) ------------------------------------------------------------------

@dataclass
class CurveServer:
    """The engine's CURVE identity for clients (control ROUTER, events PUB) and the clients it answers.

    The keys are checked by the supervisor's ZAP handler (engine/supervision/zap.py), in its own loop.
    """

    keys_dir: Path
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, keys_dir: str | os.PathLike[str]) -> CurveServer:
        d = Path(keys_dir)
        public, secret = _load(d / f"{SERVER}.key_secret", secret=True)
        if not (d / AUTHORIZED).is_dir():
            raise FileError(f"no {AUTHORIZED}/ directory of client public keys; `mediaengine keys` creates it",
                            where=str(d))
        assert secret is not None
        return cls(d, public, secret)

    def authorized(self, raw_key: bytes) -> bool:
        """Is this client public key (32 raw bytes, as ZAP gives it) in authorized_clients/ right now?"""
        try:
            return z85.encode(raw_key) in zmq.auth.load_certificates(self.keys_dir / AUTHORIZED)
        except (OSError, ValueError):
            return False

    def make_server(self, sock: zmq.Socket[Any]) -> None:
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        sock.zap_domain = CLIENTS_DOMAIN.encode()
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler answering = no connection


# ---- client side -----------------------------------------------------------------------------------

def apply_client_keys(sock: zmq.Socket[Any], keys: dict[str, str]) -> None:
    """Make `sock` a CURVE client from a `{server, public, secret}` dict of Z85 keys (before connect)."""
    sock.curve_serverkey = keys["server"].encode()
    sock.curve_publickey = keys["public"].encode()
    sock.curve_secretkey = keys["secret"].encode()


def client_keys(keys_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The client keypair and the server public key of a keys directory."""
    d = Path(keys_dir)
    server, _ = _load(d / f"{SERVER}.key", secret=False)
    public, secret = _load(d / f"{CLIENT}.key_secret", secret=True)
    assert secret is not None
    return {"server": server.decode(), "public": public.decode(), "secret": secret.decode()}


def configure_client(sock: zmq.Socket[Any], keys_dir: str | os.PathLike[str] | None) -> None:
    """Make `sock` a CURVE client with the keys in `keys_dir` (no-op for None); call before connect."""
    if keys_dir is not None:
        apply_client_keys(sock, client_keys(keys_dir))
