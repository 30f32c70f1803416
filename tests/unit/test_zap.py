"""The actors' socket lets in only this run's node keys, and tags every message with the node's id.

Real ZeroMQ sockets over ipc in one context, answered by the real `ZapHandler` (engine/supervision/zap.py):
what the supervisor's loop does with them, without a supervisor.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from mediaengine.supervision.curve import apply_client_keys
from mediaengine.supervision.zap import ActorKeys, ZapHandler, user_id


@pytest.fixture
def actors_socket(tmp_path: Path) -> Iterator[tuple[zmq.Context[Any], ActorKeys, ZapHandler, zmq.Socket[Any]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    keys = ActorKeys.generate(["src", "enc"])
    zap = ZapHandler(ctx, keys, None)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.ROUTER_HANDOVER, 1)
    keys.make_server(router)
    router.bind(f"ipc://{tmp_path}/actors.sock")  # ipc as in the engine: inproc has no security mechanism
    try:
        yield ctx, keys, zap, router
    finally:
        router.close(0)
        zap.close()
        ctx.destroy(0)


def _dealer(router: zmq.Socket[Any], identity: bytes, keys: dict[str, str] | None) -> zmq.Socket[Any]:
    ctx = router.context
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IDENTITY, identity)
    if keys is not None:
        apply_client_keys(sock, keys)
    sock.connect(router.last_endpoint.decode())
    return sock


def _pump(zap: ZapHandler, router: zmq.Socket[Any], timeout_ms: int) -> list[tuple[bytes, str, bytes]]:
    """Answer ZAP and read what reaches the router for `timeout_ms`: (routing id, user id, body)."""
    got: list[tuple[bytes, str, bytes]] = []
    poller = zmq.Poller()
    poller.register(zap.sock, zmq.POLLIN)
    poller.register(router, zmq.POLLIN)
    end = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < end:
        events = dict(poller.poll(20))
        if zap.sock in events:
            zap.handle()
        if router in events:
            ident, body = router.recv_multipart(copy=False)
            got.append((ident.bytes, str(user_id(body)), body.bytes))
    return got


def test_a_node_key_gets_in_with_the_node_as_user_id(actors_socket: Any) -> None:
    _ctx, keys, zap, router = actors_socket
    sock = _dealer(router, b"a:src", keys.for_node("src"))
    sock.send(b"hello")
    got = _pump(zap, router, 500)
    assert got == [(b"a:src", "src", b"hello")]
    sock.close(0)


def test_without_a_node_key_nothing_gets_in(actors_socket: Any) -> None:
    _ctx, keys, zap, router = actors_socket
    stranger_pub, stranger_sec = zmq.curve_keypair()
    stranger = {"server": keys.server_public.decode(), "public": stranger_pub.decode(),
                "secret": stranger_sec.decode()}
    socks = [_dealer(router, b"a:src", stranger),  # the right server key, a key of no node
             _dealer(router, b"a:src", None)]      # no CURVE at all
    for s in socks:
        s.send(b"heartbeat")
    refused = []
    poller = zmq.Poller()
    poller.register(zap.sock, zmq.POLLIN)
    end = time.monotonic() + 0.8
    while time.monotonic() < end:
        if dict(poller.poll(20)):
            refused += zap.handle()
    assert not router.poll(100, zmq.POLLIN), "a connection without this run's node key got a message in"
    assert [v.reason for v in refused] == ["a CURVE key that is no node's key in this run"]
    for s in socks:
        s.close(0)


def test_a_node_key_under_another_nodes_routing_id_is_tagged_with_its_own_node(actors_socket: Any) -> None:
    """ZAP cannot see the peer's routing id; the user id on each message lets the supervisor drop it."""
    _ctx, keys, zap, router = actors_socket
    sock = _dealer(router, b"a:src", keys.for_node("enc"))
    sock.send(b"event")
    got = _pump(zap, router, 500)
    assert got == [(b"a:src", "enc", b"event")]  # the supervisor drops it: user id enc != routing id src
    sock.close(0)
