"""rtmps verifies the server: a TLS endpoint with a self-signed certificate for `localhost` in front of
nginx-rtmp is refused by default (the Python probe and FFmpeg each on their own), accepted when its
certificate is given as `ca_file` (ffprobe then sees the stream on the server), and accepted with a
warning when `tls_verify: false`."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mediaengine.actors.rtmp_sender.socket import probe_rtmp
from mediaengine.actors.rtmp_sender.tls import client_context
from mediaengine.sdk.errors import TlsError

from tests.enginekit import Engine, wait_for
from tests.helpers import ffprobe_json
from tests.integration.test_rtmp_push import EventWatcher, stream_key
from tests.tlsproxy import TlsProxy, make_self_signed
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.rtmp]

TOPOLOGY = """\
version: 1
name: rtmps_push
nodes:
  - {{id: src, kind: test_pattern, options: {{width: 320, height: 240, fps: 15}}}}
  - {{id: venc, kind: video_encoder, inputs: {{in: src}}, options: {{bitrate_kbps: 300, gop_s: 1, preset: ultrafast}}}}
  - {{id: push, kind: rtmp_sender, inputs: {{video: venc}}, options: {options}}}
"""


@pytest.fixture
def tls_server(rtmp_server: RtmpServer, tmp_path: Path) -> Iterator[tuple[TlsProxy, Path]]:
    """(proxy, its certificate): TLS for `localhost` on a free port, relayed to nginx-rtmp."""
    cert, key = make_self_signed(tmp_path)
    with TlsProxy(cert, key, ("127.0.0.1", rtmp_server.port)) as proxy:
        yield proxy, cert


def write_topology(tmp_path: Path, **options: object) -> Path:
    opts = "{" + ", ".join(f"{k}: {v}" if isinstance(v, bool | int) else f'{k}: "{v}"'
                           for k, v in {"url": "${PUSH_URL}", **options}.items()) + "}"
    path = tmp_path / "rtmps.yaml"
    path.write_text(TOPOLOGY.format(options=opts.replace("True", "true").replace("False", "false")))
    return path


# ---- the probe alone ---------------------------------------------------------------------------------

def test_the_probe_refuses_a_self_signed_server_by_default(tls_server: tuple[TlsProxy, Path]) -> None:
    proxy, _ = tls_server
    with pytest.raises(TlsError, match=r"not trusted: .*ca_file.*tls_verify: false") as info:
        probe_rtmp("rtmps", "localhost", proxy.port, 5.0, client_context(True, ""))
    assert info.value.code == 1313
    assert proxy.handshakes == 0


def test_the_probe_accepts_the_server_with_its_ca_and_checks_the_host_name(
        tls_server: tuple[TlsProxy, Path]) -> None:
    proxy, cert = tls_server
    addresses = probe_rtmp("rtmps", "localhost", proxy.port, 5.0, client_context(True, str(cert)))
    assert "127.0.0.1" in addresses
    # the same certificate under another name (it names only `localhost`) is refused
    with pytest.raises(TlsError, match=r"IP address mismatch|hostname mismatch"):
        probe_rtmp("rtmps", "127.0.0.1", proxy.port, 5.0, client_context(True, str(cert)))
    assert isinstance(client_context(False, ""), ssl.SSLContext)
    probe_rtmp("rtmps", "127.0.0.1", proxy.port, 5.0, client_context(False, ""))


# ---- the engine: probe and FFmpeg ----------------------------------------------------------------------

@contextlib.contextmanager
def run(engine_runner: Callable[..., Engine], tmp_path: Path, url: str,
        **options: object) -> Iterator[tuple[Engine, EventWatcher]]:
    """An engine pushing to `url`; stopped with a `stop` request at the end (its rings then go too)."""
    eng = engine_runner(write_topology(tmp_path, **options), "--duration", "60", env={"PUSH_URL": url})
    events = EventWatcher(eng)
    try:
        yield eng, events
    finally:
        events.close()
        if eng.proc.poll() is None:
            with contextlib.suppress(Exception):
                eng.request("stop")
            eng.wait(30)


def test_a_self_signed_rtmps_server_is_refused_by_default_with_a_clear_error(
        engine_runner: Callable[..., Engine], tls_server: tuple[TlsProxy, Path], tmp_path: Path) -> None:
    proxy, _ = tls_server
    url = f"rtmps://localhost:{proxy.port}/live/{stream_key()}"
    with run(engine_runner, tmp_path, url) as (_eng, events):
        failed = events.wait("connect_failed", 30)
        assert "not trusted" in failed["data"]["error"] and "ca_file" in failed["data"]["error"]
        assert failed["data"]["retry_in_ms"] is None
        error = events.wait("error", 30)
        assert error["data"]["code"] == 1313, error
        assert events.named("connected") == []
        assert proxy.handshakes == 0


def test_ffmpeg_itself_refuses_the_server_when_the_probe_is_off(
        engine_runner: Callable[..., Engine], tls_server: tuple[TlsProxy, Path], tmp_path: Path) -> None:
    proxy, _ = tls_server
    url = f"rtmps://localhost:{proxy.port}/live/{stream_key()}"
    with run(engine_runner, tmp_path, url, probe=False, reconnect_interval_ms=200) as (_eng, events):
        events.wait("connect_failed", 30, count=3)
        assert events.named("connected") == []
        failed = events.named("connect_failed")
        assert all("Input/output error" in e["data"]["error"] for e in failed), failed
        # FFmpeg (GnuTLS) checks the certificate right after the handshake: nothing was sent to the server
        assert proxy.client_bytes == 0, "FFmpeg sent data to an unverified server"


@pytest.mark.parametrize("probe", [True, False], ids=["with-probe", "ffmpeg-only"])
def test_the_server_is_accepted_with_its_ca_and_ffprobe_sees_the_stream(
        engine_runner: Callable[..., Engine], rtmp_server: RtmpServer, tls_server: tuple[TlsProxy, Path],
        tmp_path: Path, probe: bool) -> None:
    proxy, cert = tls_server
    key = stream_key()
    with run(engine_runner, tmp_path, f"rtmps://localhost:{proxy.port}/live/{key}",
                      ca_file=str(cert), probe=probe) as (_eng, events):
        connected = events.wait("connected", 30)
        assert connected["data"]["url"] == f"rtmps://localhost:{proxy.port}/live/***"
        probe_out = ffprobe_json(rtmp_server.url(stream=key), "-show_streams", timeout_s=20)
        assert [s["codec_name"] for s in probe_out["streams"]] == ["h264"]
        assert proxy.handshakes >= 1


def test_tls_verify_false_connects_to_a_self_signed_server_with_a_warning(
        engine_runner: Callable[..., Engine], rtmp_server: RtmpServer, tls_server: tuple[TlsProxy, Path],
        tmp_path: Path) -> None:
    proxy, _ = tls_server
    key = stream_key()
    with run(engine_runner, tmp_path, f"rtmps://localhost:{proxy.port}/live/{key}", tls_verify=False) as (eng, events):
        warning = events.wait("tls_unverified", 30)
        assert warning["data"]["level"] == "warning" and "NOT checked" in warning["data"]["note"]
        events.wait("connected", 30)
        wait_for(lambda: "tls_verify is false" in eng.log, 10, "the warning in the engine log")
        assert key not in eng.log
