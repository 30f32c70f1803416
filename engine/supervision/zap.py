"""Who may connect: ZeroMQ authentication (ZAP, RFC 27) answered from the supervisor's own loop.

Two kinds of peers reach a supervisor, on two sockets:

* **actors** connect to the actors' ROUTER (`ipc://` in the 0700 run directory).  That socket is always
  a CURVE server with a keypair made for this run; each node gets its own client keypair, handed to
  its process in its spec (never on disk, never in argv).  A connection is accepted only with a node's
  key, and that node's id becomes the connection's ZAP user id.  The supervisor reads every message's
  user id and drops a message whose routing id (`a:<node>`) names another node, so nobody without
  the run's keys gets a message in.  (libzmq gives ZAP the server's routing id, not the peer's, so the
  routing id can only be checked per message.)  `ROUTER_HANDOVER` is on for that socket only, so a
  restarted actor replaces its dead predecessor at once; a client cannot connect to it at all.
* **clients** (CLI, monitors, the Python API) connect to the control ROUTER and the events PUB.  With
  `--curve-keys` both are CURVE servers and a client is accepted if its public key is in the keys
  directory's `authorized_clients/` (re-read at every connection); without keys they use no
  mechanism and ZAP is not asked (they are then only reachable by this user, through the 0700 ipc
  directory, or on loopback TCP with `--insecure-loopback`).

No thread: the ZAP socket is one more socket in the supervisor's poller.  libzmq parks a connection
until the reply comes, so a busy loop delays a handshake, never a message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.utils import z85

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ACTORS_DOMAIN = "mediaengine.actors"
CLIENTS_DOMAIN = "mediaengine.clients"
ACTOR_PREFIX = b"a:"


@dataclass(frozen=True)
class ZapVerdict:
    """One answered handshake: accepted or not, the user id given, and why (for the log)."""

    ok: bool
    user_id: str
    reason: str


@dataclass
class ActorKeys:
    """This run's CURVE keys for the actors' socket: one server keypair, one client keypair per node."""

    server_public: bytes
    server_secret: bytes
    nodes: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)  # node -> (public, secret)

    @classmethod
    def generate(cls, node_ids: list[str]) -> ActorKeys:
        pub, sec = zmq.curve_keypair()
        return cls(pub, sec, {nid: zmq.curve_keypair() for nid in node_ids})

    def for_node(self, node_id: str) -> dict[str, str]:
        """What the node's process needs to connect (travels in its spec)."""
        public, secret = self.nodes[node_id]
        return {"server": self.server_public.decode(), "public": public.decode(), "secret": secret.decode()}

    def node_of(self, public: bytes) -> str | None:
        for nid, (pub, _) in self.nodes.items():
            if zmq_key_equal(pub, public):
                return nid
        return None

    def make_server(self, sock: zmq.Socket[Any]) -> None:
        sock.curve_secretkey = self.server_secret
        sock.curve_publickey = self.server_public
        sock.curve_server = True
        sock.zap_domain = ACTORS_DOMAIN.encode()
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # no ZAP handler answering = no connection


def zmq_key_equal(z85_or_raw: bytes, raw: bytes) -> bool:
    """Compare a Z85-encoded key (what `curve_keypair` returns) with the 32 raw bytes ZAP sends."""
    if len(z85_or_raw) == 40:
        z85_or_raw = z85.decode(z85_or_raw)
    return z85_or_raw == raw


def judge_actor(keys: ActorKeys, mechanism: bytes, credentials: list[bytes]) -> ZapVerdict:
    """The actors' socket: a CURVE key of this run; the node it belongs to becomes the user id."""
    if mechanism != b"CURVE" or len(credentials) != 1:
        return ZapVerdict(False, "", f"mechanism {mechanism[:16]!r} (actors must use CURVE)")
    node = keys.node_of(credentials[0])
    if node is None:
        return ZapVerdict(False, "", "a CURVE key that is no node's key in this run")
    return ZapVerdict(True, node, "")


class ZapHandler:
    """Answers ZAP requests for the actors' domain and, with CURVE keys, the clients' domain."""

    def __init__(self, ctx: zmq.Context[Any], actors: ActorKeys,
                 authorized: Callable[[bytes], bool] | None) -> None:
        self.actors = actors
        self.authorized = authorized  # client public key (raw 32 bytes) -> accepted?
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(ZAP_ENDPOINT)

    def judge(self, domain: bytes, mechanism: bytes, credentials: list[bytes]) -> ZapVerdict:
        if domain == ACTORS_DOMAIN.encode():
            return judge_actor(self.actors, mechanism, credentials)
        if domain == CLIENTS_DOMAIN.encode() and self.authorized is not None:
            if mechanism == b"CURVE" and len(credentials) == 1 and self.authorized(credentials[0]):
                return ZapVerdict(True, "client", "")
            return ZapVerdict(False, "", "a client key that is not in authorized_clients/")
        return ZapVerdict(False, "", f"unknown ZAP domain {domain[:64]!r}")

    def handle(self) -> list[ZapVerdict]:
        """Answer every waiting request; returns the refusals (the supervisor logs them)."""
        refused: list[ZapVerdict] = []
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return refused
            # [peer, b"", version, request_id, domain, address, identity, mechanism, *credentials]
            if len(frames) < 8 or frames[1] != b"" or frames[2] != b"1.0":
                continue  # not a ZAP 1.0 request: libzmq never sends one, nobody else can reach inproc
            peer, _, version, request_id, domain, _address, _identity, mechanism, *credentials = frames
            verdict = self.judge(domain, mechanism, credentials)
            if not verdict.ok:
                refused.append(verdict)
            status, text = (b"200", b"OK") if verdict.ok else (b"400", b"refused")
            reply = [peer, b"", version, request_id, status, text, verdict.user_id.encode(), b""]
            try:
                self.sock.send_multipart(reply, zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the handshake's peer is gone

    def close(self) -> None:
        self.sock.close(0)


def user_id(frame: zmq.Frame) -> str | None:
    """The ZAP user id of the connection a message came on (None if the connection has none)."""
    try:
        value = frame.get("User-Id")
    except zmq.ZMQError:  # EINVAL: no such property (no ZAP, or an inproc connection)
        return None
    return value if isinstance(value, str) else None
