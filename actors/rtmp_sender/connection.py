"""The FFmpeg side of the RTMP sender: one FLV publishing session over PyAV (`FlvConnection`), and the
protocol the publisher needs from a connection (so the unit tests can drive it with a fake)."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import av
import av.bitstream
import av.container
import av.stream
from mediaengine.sdk.codec import add_stream_from_params, packet_to_av
from mediaengine.sdk.formats import Packet

from .socket import find_socket, limit_in_flight, shutdown_socket, socket_stats
from .tls import close_output_io, open_output_io

MUX_OPTIONS = {"flush_packets": "1", "max_interleave_delta": "1"}


class FlvConnection:
    """One RTMP publishing session: an FLV output container with one stream per track, and the TCP
    socket FFmpeg opened for it (found through /proc once connected)."""

    def __init__(self, url: str, params: Mapping[str, dict[str, Any]], *,
                 io_options: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.io_options = dict(io_options) if io_options is not None else None  # rtmps: see tls.py
        self.container: av.container.OutputContainer = av.open(
            url, "w", format="flv", container_options=dict(MUX_OPTIONS))
        self.streams: dict[str, av.stream.Stream] = {}
        self._extract: dict[str, av.bitstream.BitStreamFilterContext] = {}  # new sequence headers
        self.sock: tuple[int, int] | None = None  # (fd, inode)
        try:
            for kind, p in params.items():
                self.streams[kind] = add_stream_from_params(self.container, p)
        except BaseException:
            self.container.close()
            raise

    def start(self) -> None:
        """Connect and publish, then write the FLV header.  With `io_options` (rtmps) the connection
        is opened first with those protocol options (TLS verification; the GIL is free meanwhile);
        otherwise PyAV connects inside `start_encoding` (FFmpeg holds the GIL)."""
        if self.io_options is None:
            self.container.start_encoding()
            return
        open_output_io(self.container, self.url, self.io_options)
        try:
            self.container.start_encoding()
        except BaseException:
            close_output_io(self.container)  # PyAV closes it only after a written header
            raise

    def mux(self, kind: str, packet: Packet, offset: int, data: bytes | None = None,
            new_header: bool = False) -> None:
        """Send one packet, timestamps shifted back by `offset` (in the packet's time base).

        `new_header`: the packet (a keyframe) carries new SPS/PPS in-band; FFmpeg's `extract_extradata`
        bitstream filter copies them into the packet's NEW_EXTRADATA side data, on which the FLV muxer
        writes a new AVC sequence header (AVCDecoderConfigurationRecord) right before this packet.
        PyAV cannot attach that side data from bytes, hence the filter."""
        stream = self.streams[kind]
        pkt = packet_to_av(packet if data is None else packet.replace(data=data), stream, offset=offset)
        if not new_header:
            self.container.mux(pkt)
            return
        bsf = self._extract.get(kind)
        if bsf is None:
            bsf = self._extract[kind] = av.bitstream.BitStreamFilterContext("extract_extradata", in_stream=stream)
        for out in bsf.filter(pkt):
            out.stream = stream
            self.container.mux(out)

    def close(self) -> None:
        self.container.close()

    def locate(self, port: int, addresses: set[str]) -> None:
        """Find the connected socket (call after `start`)."""
        self.sock = find_socket(port, addresses)

    def stats(self) -> tuple[int, int] | None:
        """(unsent bytes, bytes acknowledged by the server), None if the socket is unknown."""
        return socket_stats(*self.sock) if self.sock is not None else None

    def abort(self) -> bool:
        """Shut the socket down so that any blocked or later write fails at once."""
        return shutdown_socket(*self.sock) if self.sock is not None else False

    def limit_in_flight(self, bytes_per_s: float, slack_s: float, floor: int) -> int | None:
        """Bound what the socket holds (see socket.limit_in_flight)."""
        return limit_in_flight(*self.sock, bytes_per_s, slack_s, floor) if self.sock is not None else None


class Connection(Protocol):
    """What the writer needs from a connection (FlvConnection; fakes in the unit tests)."""

    def start(self) -> None: ...
    def mux(self, kind: str, packet: Packet, offset: int, data: bytes | None = None,
            new_header: bool = False) -> None: ...
    def close(self) -> None: ...
    def locate(self, port: int, addresses: set[str]) -> None: ...
    def stats(self) -> tuple[int, int] | None: ...
    def abort(self) -> bool: ...
    def limit_in_flight(self, bytes_per_s: float, slack_s: float, floor: int) -> int | None: ...


Connector = Callable[[str, Mapping[str, dict[str, Any]]], Connection]
Prober = Callable[[str, str, int, float, ssl.SSLContext | None], set[str]]
