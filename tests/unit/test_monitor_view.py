"""Monitor model and rendering, Prometheus exposition and CURVE key handling: pure parts, no engine."""

from __future__ import annotations

import re
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zmq.auth
from mediaengine.cli.monitor import MonitorState, node_view, render_text
from mediaengine.sdk.errors import FileError, NotAllowedError, ResourceError
from mediaengine.supervision.curve import (
    CurveServer,
    check_exposure,
    client_keys,
    connectable,
    generate_keys,
    is_local_endpoint,
)
from mediaengine.supervision.prometheus import CONTENT_TYPE, MetricsServer, metric_name, render
from zmq.utils import z85


def _metrics(fps_out: float = 30.0, **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {
        "fps_in": {"in": 29.5}, "fps_out": {"out": fps_out}, "frames_in": {"in": 300}, "frames_out": {"out": 290},
        "drops": {"in": 8, "out->snap": 2}, "drop_pct": 3.2, "proc_ms_median": 4.5, "proc_ms_p95": 9.25,
        "cpu_pct": 12.5, "rss_bytes": 64_000_000, "uptime_s": 10.0, "queues": {"in": {"held": 1, "depth": 4}},
        "counters": {},
    }
    m.update(extra)
    return m


def _status(**node_overrides: Any) -> dict[str, Any]:
    venc = {"id": "venc", "kind": "video_encoder", "pid": 101, "state": "running", "restarts": 0,
            "uptime_s": 10.0, "last_error": None, "metrics": _metrics(actor={"repeated_frames": 3})}
    push = {"id": "push", "kind": "rtmp_sender", "pid": 102, "state": "running", "restarts": 2, "uptime_s": 4.0,
            "last_error": None,
            "metrics": _metrics(actor={"bitrate_kbps": 2500.5, "unsent_bytes": 1200, "reconnects": 1,
                                       "connected": True})}
    venc.update(node_overrides)
    return {"engine_id": "e1", "name": "demo", "pid": 100, "state": "running", "nodes": [venc, push],
            "events_recent": [
                {"node": "venc", "name": "started", "data": {"pid": 99, "restarts": 0}, "t": 1.0},
                {"node": "push", "name": "connected", "data": {}, "t": 2.0},
            ]}


# ---- monitor model ---------------------------------------------------------------------------------------

def test_node_view_has_every_figure_a_user_reads() -> None:
    v = node_view(_status()["nodes"][0])
    assert v["state"] == "running" and v["pid"] == 101 and v["restarts"] == 0 and v["uptime_s"] == 10.0
    assert (v["fps_in"], v["fps_out"]) == (29.5, 30.0)
    assert (v["dropped"], v["drop_pct"]) == (10, 3.2)
    assert v["queues"] == {"in": {"held": 1, "depth": 4, "fill_pct": 25.0}}
    assert (v["proc_ms_median"], v["proc_ms_p95"], v["cpu_pct"], v["rss_bytes"]) == (4.5, 9.25, 12.5, 64_000_000)
    assert v["actor"] == {"repeated_frames": 3}


def test_a_node_that_is_not_running_shows_no_stale_rates() -> None:
    v = node_view(_status(state="restarting", pid=None)["nodes"][0])
    assert (v["fps_in"], v["fps_out"], v["cpu_pct"], v["rss_bytes"]) == (0.0, 0.0, 0.0, 0)
    assert v["frames_in"] == 300  # totals stay visible


def test_replayed_events_do_not_override_the_snapshot_state() -> None:
    s = MonitorState()
    s.apply_status(_status())
    view = s.view(5.0)
    venc = view["nodes"][0]
    assert venc["state"] == "running" and venc["pid"] == 101  # not the replayed `started` (pid 99)
    assert [e["name"] for e in view["events"]] == ["started", "connected"]
    assert s.view(6.0)["events"] == []  # only new events in later views


def test_live_events_update_the_view_and_duplicates_are_dropped() -> None:
    s = MonitorState()
    s.apply_status(_status())
    s.view(5.0)
    # seen in the snapshot already: ignored
    s.apply_pub("events.venc", {"node": "venc", "name": "started", "data": {"pid": 99}, "t": 1.0})
    s.apply_pub("events.venc", {"node": "venc", "name": "exited", "data": {"exit": -9}, "t": 7.0})
    s.apply_pub("events.venc", {"node": "venc", "name": "restarting", "data": {"restarts": 1}, "t": 7.1})
    view = s.view(8.0)
    assert [e["name"] for e in view["events"]] == ["exited", "restarting"]
    assert view["nodes"][0]["state"] == "restarting" and view["nodes"][0]["restarts"] == 1
    s.apply_pub("events.venc", {"node": "venc", "name": "started", "data": {"pid": 120, "restarts": 1}, "t": 7.3})
    assert s.view(8.1)["nodes"][0]["pid"] == 120
    s.apply_pub("events.engine", {"node": "engine", "name": "stopping", "data": {"reason": "SIGINT"}, "t": 9.0})
    assert s.view(9.1)["state"] == "stopping" and s.stopping_reason == "SIGINT"


def test_metrics_messages_replace_a_nodes_figures() -> None:
    s = MonitorState()
    s.apply_status(_status())
    s.apply_pub("metrics.venc", {"node": "venc", "t": 3.0, **_metrics(fps_out=12.0)})
    s.apply_pub("metrics.ghost", {"node": "ghost", "t": 3.0})  # unknown node: ignored
    view = s.view(4.0)
    assert view["nodes"][0]["fps_out"] == 12.0
    assert view["totals"] == {"nodes": 2, "running": 2, "restarts": 2, "cpu_pct": 25.0, "rss_bytes": 128_000_000,
                              "dropped": 20}


def test_outputs_list_every_figure_a_sender_reports() -> None:
    view = MonitorState()
    view.apply_status(_status())
    outputs = view.view(1.0)["outputs"]
    assert outputs == [{"id": "push", "kind": "rtmp_sender", "state": "running", "bitrate_kbps": 2500.5,
                        "unsent_bytes": 1200, "reconnects": 1, "connected": True}]


def test_text_dashboard() -> None:
    s = MonitorState()
    s.apply_status(_status())
    view = s.view(5.0, all_events=True)
    text = render_text(view, events=view["events"])
    lines = text.splitlines()
    row = next(ln for ln in lines if ln.startswith("venc"))
    for part in ("video_encoder", "running", "101", "0:00:10", "29.5", "30.0", "10 (3.2%)", "4.50/9.25", "12.5",
                 "64.0", "in 1/4"):
        assert part in row, (part, row)
    assert "OUTPUTS" in lines
    assert "bitrate_kbps 2500.5" in text and "unsent_bytes 1200" in text and "reconnects 1" in text
    assert any("connected" in ln and ln.startswith(("0", "1", "2")) for ln in lines)
    assert "\x1b[" not in text
    assert "\x1b[32m" in render_text(view, color=True)


# ---- Prometheus -----------------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*",?)*\})? (\S+)$')


def parse_exposition(text: str) -> dict[str, list[tuple[str, float]]]:
    """A strict reader of the text format: every line valid, HELP/TYPE once and before the samples."""
    assert text.endswith("\n")
    families: dict[str, list[tuple[str, float]]] = {}
    typed: set[str] = set()
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in families, f"family {name} appears twice"
            families[name], current = [], name
        elif line.startswith("# TYPE "):
            _, _, name, mtype = line.split()
            assert name == current and mtype in ("gauge", "counter")
            typed.add(name)
        else:
            m = _SAMPLE.match(line)
            assert m, f"bad sample line {line!r}"
            assert m.group(1) == current and current in typed, f"{line!r} outside its family"
            families[current].append((m.group(2) or "", float(m.group(5))))
    return families


def test_prometheus_text_has_the_same_figures() -> None:
    fam = parse_exposition(render(_status()))
    assert fam["mediaengine_engine_info"] == [('{engine_id="e1",name="demo"}', 1.0)]
    assert ('{node="venc",kind="video_encoder"}', 1.0) in fam["mediaengine_node_up"]
    assert ('{node="push",kind="rtmp_sender"}', 2.0) in fam["mediaengine_node_restarts_total"]
    assert ('{node="venc",kind="video_encoder",direction="out",pad="out"}', 30.0) in fam["mediaengine_node_fps"]
    assert ('{node="venc",kind="video_encoder",where="out->snap"}', 2.0) in fam["mediaengine_node_dropped_frames_total"]
    assert ('{node="venc",kind="video_encoder",pad="in",what="held"}', 1.0) in fam["mediaengine_node_queue_slots"]
    assert ('{node="venc",kind="video_encoder",quantile="0.95"}', 0.00925) in \
        fam["mediaengine_node_frame_processing_seconds"]
    assert ('{node="push",kind="rtmp_sender"}', 2500.5) in fam["mediaengine_actor_bitrate_kbps"]
    assert ('{node="push",kind="rtmp_sender"}', 1.0) in fam["mediaengine_actor_connected"]
    assert fam["mediaengine_actor_repeated_frames"] == [('{node="venc",kind="video_encoder"}', 3.0)]


def test_prometheus_escapes_labels_and_skips_what_is_not_a_number() -> None:
    st = _status(id='we"ird\\node\nx', metrics=_metrics(actor={"path": "/x.mp4", "ratio": float("nan"),
                                                               "streams": {"video": 2, "label": "v"}}))
    text = render(st)
    fam = parse_exposition(text)
    assert '{node="we\\"ird\\\\node\\nx",kind="video_encoder"}' in dict(fam["mediaengine_node_up"])
    assert "mediaengine_actor_path" not in fam and "mediaengine_actor_ratio" not in fam
    assert fam["mediaengine_actor_streams_video"][0][1] == 2.0
    assert metric_name("bitrate kbps") == "bitrate_kbps" and metric_name("5xx") == "_5xx"


def test_metrics_server_serves_the_latest_status() -> None:
    server = MetricsServer("127.0.0.1", 0)
    server.start()
    try:
        server.update(_status())
        with urllib.request.urlopen(server.url, timeout=5) as r:
            assert r.status == 200 and r.headers["Content-Type"] == CONTENT_TYPE
            assert "mediaengine_node_up" in parse_exposition(r.read().decode())
        server.update(_status(state="restarting"))
        with urllib.request.urlopen(server.url, timeout=5) as r:
            fam = parse_exposition(r.read().decode())
        assert ('{node="venc",kind="video_encoder"}', 0.0) in fam["mediaengine_node_up"]
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=5)
        assert info.value.code == 404
        info.value.close()
    finally:
        server.stop()


def test_metrics_server_on_a_busy_port_names_the_port() -> None:
    first = MetricsServer("127.0.0.1", 0)
    try:
        port = int(first.url.rsplit(":", 1)[1].split("/")[0])
        with pytest.raises(ResourceError, match=rf"--metrics-port: cannot serve metrics on 127\.0\.0\.1:{port}"):
            MetricsServer("127.0.0.1", port)
    finally:
        first.stop()


def test_metrics_server_on_ipv6_loopback() -> None:
    server = MetricsServer("::1", 0)
    server.start()
    try:
        assert server.url.startswith("http://[::1]:")
        server.update(_status())
        with urllib.request.urlopen(server.url, timeout=5) as r:
            assert "mediaengine_node_up" in parse_exposition(r.read().decode())
    finally:
        server.stop()


# ---- CURVE ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("endpoint", "local"), [
    ("ipc:///run/x/control.sock", True), ("inproc://x", True), ("tcp://127.0.0.1:5555", True),
    ("tcp://127.9.9.9:5555", True), ("tcp://localhost:5555", True), ("tcp://[::1]:5555", True),
    ("tcp://lo:5555", True), ("tcp://0.0.0.0:5555", False), ("tcp://*:5555", False),
    ("tcp://192.168.1.4:5555", False), ("tcp://eth0:5555", False), ("tcp://[::]:5555", False),
    ("pgm://eth0;239.192.1.1:5555", False), ("garbage", False),
])
def test_which_endpoints_stay_on_this_machine(endpoint: str, local: bool) -> None:
    assert is_local_endpoint(endpoint) is local


def test_exposure_without_keys_is_refused_with_the_fix() -> None:
    assert check_exposure(["ipc:///x", None, "inproc://y"], None) == []
    assert check_exposure(["tcp://0.0.0.0:1", "tcp://127.0.0.1:2"], "keys/") == []
    with pytest.raises(NotAllowedError, match=r"tcp://0\.0\.0\.0:5555.*mediaengine keys.*--curve-keys") as info:
        check_exposure(["ipc:///x", "tcp://0.0.0.0:5555"], None)
    assert info.value.code == 1411
    # loopback TCP is not private either (issue 9.3): keys, or an explicit --insecure-loopback
    with pytest.raises(NotAllowedError, match=r"tcp://127\.0\.0\.1:1 without keys.*--curve-keys.*"
                                              r"--insecure-loopback") as info:
        check_exposure(["ipc:///x", "tcp://127.0.0.1:1"], None)
    assert info.value.code == 1411
    assert check_exposure(["ipc:///x", "tcp://127.0.0.1:1"], None, insecure_loopback=True) == ["tcp://127.0.0.1:1"]
    with pytest.raises(NotAllowedError, match="beyond this machine"):
        check_exposure(["tcp://0.0.0.0:5555"], None, insecure_loopback=True)  # never beyond loopback


def test_connectable_endpoints() -> None:
    assert connectable("tcp://0.0.0.0:5556", "10.0.0.2") == "tcp://10.0.0.2:5556"
    assert connectable("tcp://*:5556") == "tcp://127.0.0.1:5556"
    assert connectable("tcp://10.0.0.3:5556", "10.0.0.2") == "tcp://10.0.0.3:5556"
    assert connectable("ipc:///x/events.sock") == "ipc:///x/events.sock"


def test_keys_are_private_files_zmq_can_read(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    paths = generate_keys(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / "authorized_clients").stat().st_mode) == 0o700
    for p in paths.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    server_pub, server_sec = zmq.auth.load_certificate(paths["server_secret"])
    assert server_sec and len(server_pub) == 40 and len(server_sec) == 40
    assert zmq.auth.load_certificate(paths["server_public"]) == (server_pub, None)
    client_pub, _ = zmq.auth.load_certificate(paths["client_secret"])
    assert zmq.auth.load_certificates(d / "authorized_clients") == {client_pub: True}
    assert client_keys(d) == {"server": server_pub.decode(), "public": client_pub.decode(),
                              "secret": zmq.auth.load_certificate(paths["client_secret"])[1].decode()}  # type: ignore[union-attr]
    server = CurveServer.load(d)
    assert server.public == server_pub
    assert server.authorized(z85.decode(client_pub)) and not server.authorized(z85.decode(zmq.curve_keypair()[0]))


def test_existing_keys_are_kept_unless_forced(tmp_path: Path) -> None:
    first = zmq.auth.load_certificate(generate_keys(tmp_path)["server_public"])
    with pytest.raises(FileError, match="--force"):
        generate_keys(tmp_path)
    assert zmq.auth.load_certificate(tmp_path / "server.key") == first
    assert zmq.auth.load_certificate(generate_keys(tmp_path, force=True)["server_public"]) != first


def test_missing_keys_name_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileError, match=r"server\.key_secret.*mediaengine keys"):
        CurveServer.load(tmp_path)
    with pytest.raises(FileError, match=r"server\.key"):
        client_keys(tmp_path)
