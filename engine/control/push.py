"""The caller's side of `Engine.push_video` / `push_audio` (and the asyncio twins).

A push is checked here, in the caller's process, with the same functions the node uses
(`sdk.pixels.check_video`, `sdk.ingress.check_audio`), so a wrong shape, dtype, format, rate or channel
count raises its typed error (1212-1216) before anything leaves: the engine never sees it.  Then the
array goes as one message (header + bytes, `sdk.ingress`) to the node's ZeroMQ ingress socket in the
engine's runtime directory, found once per node with the node's `ingress` command.  Pushing needs
the engine on this machine (its runtime directory is local); a remote `attach` cannot push.

Overflow follows the node's `policy`: `block` sends wait for room (at most `timeout` seconds, then the
frame is dropped and counted); `drop_newest`/`drop_oldest` never wait (a full queue drops the frame
here, counted and reported to the node, which shows it in `caller_dropped`).  Each push returns True
if the frame was handed to the node, False if it was dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from ..sdk.errors import EngineError, PushTargetError, UnknownCommandError
from ..sdk.ingress import Header, check_audio, pack_header
from ..sdk.pixels import check_video

__all__ = ["AsyncPusher", "Ingress", "Pusher"]

#: how long a `block` push waits for room before the frame counts as dropped
DEFAULT_BLOCK_S = 2.0


@dataclass(frozen=True)
class Ingress:
    """What a node told about its ingress (`ingress` command)."""

    node: str
    video: str | None  # endpoint, None when the node takes no pictures
    audio: str | None
    width: int
    height: int
    policy: str
    depth: int

    @classmethod
    def from_reply(cls, node: str, r: dict[str, Any]) -> Ingress:
        v = r.get("video_format") or {}
        return cls(node, r.get("video"), r.get("audio"), int(v.get("width", 0)), int(v.get("height", 0)),
                   str(r.get("policy", "block")), int(r.get("depth", 4)))

    def endpoint(self, media: str) -> str:
        ep = self.video if media == "video" else self.audio
        if ep is None:
            raise PushTargetError(f"node {self.node!r} takes no pushed {media}: its `{media}` option is false")
        return ep


def _target_error(node: str, e: EngineError) -> EngineError:
    if isinstance(e, UnknownCommandError):
        return PushTargetError(f"node {node!r} takes no pushed media: only `external_source` nodes do ({e.message})")
    return e


def video_message(ing: Ingress, array: Any, pts_ns: int | None, pix_fmt: str, dropped: int) -> list[Any]:
    """Header + picture, checked against the node's size (typed errors 1212-1214)."""
    if pts_ns is not None and (not isinstance(pts_ns, int) or isinstance(pts_ns, bool)):
        raise TypeError(f"pts_ns is an int of nanoseconds or None, got {pts_ns!r}")
    arr = check_video(array, pix_fmt, ing.width, ing.height, node=ing.node)
    return [pack_header(Header(pix_fmt, arr.shape, pts_ns=pts_ns, dropped=dropped)), arr]


def audio_message(ing: Ingress, array: Any, sample_rate: int, sample_fmt: str | None, dropped: int) -> list[Any]:
    """Header + PCM (typed errors 1212-1215)."""
    pcm, fmt = check_audio(array, sample_rate, sample_fmt, node=ing.node)
    return [pack_header(Header(fmt, pcm.shape, rate=sample_rate, dropped=dropped)), np.ascontiguousarray(pcm)]


class Pusher:
    """Ingress sockets of one engine, per node and media kind (synchronous; one thread drives it)."""

    def __init__(self, command: Callable[[str, str], Any]) -> None:
        self._command = command
        self._ctx = zmq.Context()
        self._ingress: dict[str, Ingress] = {}
        self._socks: dict[tuple[str, str], zmq.Socket[bytes]] = {}
        self.dropped: dict[tuple[str, str], int] = {}

    def ingress(self, node: str) -> Ingress:
        if node not in self._ingress:
            try:
                self._ingress[node] = Ingress.from_reply(node, self._command(node, "ingress"))
            except EngineError as e:
                raise _target_error(node, e) from e
        return self._ingress[node]

    def _sock(self, ing: Ingress, media: str) -> zmq.Socket[bytes]:
        key = (ing.node, media)
        if key not in self._socks:
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, ing.depth)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only towards a live node, not towards a dead endpoint
            sock.connect(ing.endpoint(media))
            # the connection is made in the background: wait for it once, or a non-blocking first push
            # would be dropped for want of a peer
            sock.poll(int(DEFAULT_BLOCK_S * 1000), zmq.POLLOUT)
            self._socks[key] = sock
        return self._socks[key]

    def send(self, ing: Ingress, media: str, parts: list[Any], timeout: float | None) -> bool:
        sock = self._sock(ing, media)
        key = (ing.node, media)
        try:
            if ing.policy == "block":
                sock.setsockopt(zmq.SNDTIMEO, int(1000 * (DEFAULT_BLOCK_S if timeout is None else timeout)))
                sock.send_multipart(parts, copy=True)
            else:
                sock.send_multipart(parts, zmq.NOBLOCK, copy=True)
        except zmq.Again:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return False
        return True

    def push_video(self, node: str, array: Any, pts_ns: int | None, pix_fmt: str, timeout: float | None) -> bool:
        ing = self.ingress(node)
        ing.endpoint("video")
        parts = video_message(ing, array, pts_ns, pix_fmt, self.dropped.get((node, "video"), 0))
        return self.send(ing, "video", parts, timeout)

    def push_audio(self, node: str, array: Any, sample_rate: int, sample_fmt: str | None,
                   timeout: float | None) -> bool:
        ing = self.ingress(node)
        ing.endpoint("audio")
        parts = audio_message(ing, array, sample_rate, sample_fmt, self.dropped.get((node, "audio"), 0))
        return self.send(ing, "audio", parts, timeout)

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close(0)
        self._socks.clear()
        self._ctx.term()


class AsyncPusher:
    """`Pusher` for asyncio: the same checks and messages; sends await room instead of blocking the loop."""

    def __init__(self, command: Callable[[str, str], Awaitable[Any]]) -> None:
        self._command = command
        self._ctx = zmq.asyncio.Context()
        self._ingress: dict[str, Ingress] = {}
        self._socks: dict[tuple[str, str], zmq.asyncio.Socket] = {}
        self.dropped: dict[tuple[str, str], int] = {}

    async def ingress(self, node: str) -> Ingress:
        if node not in self._ingress:
            try:
                self._ingress[node] = Ingress.from_reply(node, await self._command(node, "ingress"))
            except EngineError as e:
                raise _target_error(node, e) from e
        return self._ingress[node]

    async def _sock(self, ing: Ingress, media: str) -> zmq.asyncio.Socket:
        key = (ing.node, media)
        if key not in self._socks:
            sock = self._ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, ing.depth)
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.connect(ing.endpoint(media))
            poller = zmq.asyncio.Poller()  # wait for the connection once (see Pusher._sock)
            poller.register(sock, zmq.POLLOUT)
            await poller.poll(int(DEFAULT_BLOCK_S * 1000))
            self._socks[key] = sock
        return self._socks[key]

    async def send(self, ing: Ingress, media: str, parts: list[Any], timeout: float | None) -> bool:
        sock = await self._sock(ing, media)
        key = (ing.node, media)
        try:
            if ing.policy == "block":  # a send cancelled by the timeout has not been queued
                await asyncio.wait_for(sock.send_multipart(parts, copy=True),
                                       DEFAULT_BLOCK_S if timeout is None else timeout)
            else:
                await sock.send_multipart(parts, zmq.NOBLOCK, copy=True)
        except (TimeoutError, zmq.Again):
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return False
        return True

    async def push_video(self, node: str, array: Any, pts_ns: int | None, pix_fmt: str,
                         timeout: float | None) -> bool:
        ing = await self.ingress(node)
        ing.endpoint("video")
        parts = video_message(ing, array, pts_ns, pix_fmt, self.dropped.get((node, "video"), 0))
        return await self.send(ing, "video", parts, timeout)

    async def push_audio(self, node: str, array: Any, sample_rate: int, sample_fmt: str | None,
                         timeout: float | None) -> bool:
        ing = await self.ingress(node)
        ing.endpoint("audio")
        parts = audio_message(ing, array, sample_rate, sample_fmt, self.dropped.get((node, "audio"), 0))
        return await self.send(ing, "audio", parts, timeout)

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close(0)
        self._socks.clear()
        self._ctx.term()
