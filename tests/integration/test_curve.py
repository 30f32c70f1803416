"""Remote monitoring, securely: binding beyond loopback needs CURVE keys, and with keys only authorized
clients get answers (control and events).  Loopback only: the refusal is tested with 0.0.0.0 (it
happens before anything binds), the authentication on tcp://127.0.0.1 with keys.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
from mediaengine.control.api import Engine as ApiEngine
from mediaengine.control.client import ControlClient
from mediaengine.control.events import Subscriber
from mediaengine.sdk.errors import TimeoutError_
from mediaengine.supervision.curve import client_keys

from tests.enginekit import ROOT, Engine, wait_for
from tools.rtmp_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEMO = "topologies/demo.yaml"


def cli(runtime_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(runtime_dir)}
    return subprocess.run([sys.executable, "-m", "mediaengine.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_binding_beyond_loopback_without_keys_is_refused(tmp_path: Path) -> None:
    rdir = tmp_path / "runtime"
    rdir.mkdir(mode=0o700)
    port = free_port()
    for flag, endpoint in (("--control", f"tcp://0.0.0.0:{port}"), ("--events", f"tcp://*:{port}"),
                           ("--control", f"tcp://eth0:{port}")):
        out = cli(rdir, "run", DEMO, flag, endpoint, "--duration", "1")
        assert out.returncode == 1, out.stderr
        assert f"binding {endpoint} would expose the engine beyond this machine" in out.stderr
        assert "mediaengine keys" in out.stderr and "--curve-keys" in out.stderr
        assert out.stderr.rstrip().endswith("(error 1411 InsecureEndpointError)")
        assert "started pid=" not in out.stderr  # refused before anything ran
    assert not any(rdir.iterdir()), "no runtime directory was created"
    assert _port_is_free(port), "nothing was bound"
    missing = cli(rdir, "run", DEMO, "--control", f"tcp://0.0.0.0:{port}", "--curve-keys", str(tmp_path / "nokeys"))
    assert missing.returncode == 1 and "(error 1301 FileError)" in missing.stderr and "server.key_secret" in \
        missing.stderr


def test_keys_command_writes_private_keypairs(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    out = cli(tmp_path, "keys", "-o", str(keys))
    assert out.returncode == 0, out.stderr
    names = sorted(str(p.relative_to(keys)) for p in keys.rglob("*") if p.is_file())
    assert names == ["authorized_clients/client.key", "client.key", "client.key_secret", "server.key",
                     "server.key_secret"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in keys.rglob("*") if p.is_file())
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    again = cli(tmp_path, "keys", "-o", str(keys))
    assert again.returncode == 1 and "--force" in again.stderr


def _client(endpoint: str, keys: dict[str, str] | None, timeout_s: float = 1.5) -> ControlClient:
    c = ControlClient(endpoint, timeout_s=timeout_s)
    if keys is not None:  # set by hand: wrong or foreign keys (ControlClient takes a keys dir)
        c.sock.close(0)
        c.sock = c.ctx.socket(zmq.DEALER)
        c.sock.setsockopt(zmq.LINGER, 0)
        c.sock.curve_serverkey = keys["server"].encode()
        c.sock.curve_publickey = keys["public"].encode()
        c.sock.curve_secretkey = keys["secret"].encode()
        c.sock.connect(endpoint)
    return c


def _no_answer(c: ControlClient) -> None:
    try:
        with pytest.raises(TimeoutError_):
            c.request("ps")
    finally:
        c.close()


def test_with_keys_only_authorized_clients_get_answers(engine_runner: Callable[..., Engine], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    other = tmp_path / "other"
    assert cli(tmp_path, "keys", "-o", str(keys)).returncode == 0
    assert cli(tmp_path, "keys", "-o", str(other)).returncode == 0
    # port 0 (`*`): the engine binds and reports the ports the system chose, so no other process can take
    # them between choosing and binding
    eng = engine_runner(DEMO, "--control", "tcp://127.0.0.1:*", "--events", "tcp://127.0.0.1:*",
                        "--curve-keys", str(keys), "--set", f"rec.path={tmp_path / 'c.mp4'}",
                        "--set", f"snap.path={tmp_path / 'c.png'}")
    started = wait_for(eng.info, 30, "engine.json")
    control, events = str(started["control_public"]), str(started["events_public"])
    assert control.startswith("tcp://127.0.0.1:") and not control.endswith(":*") and control != events

    def ps_with_keys() -> dict[str, Any] | None:
        with ControlClient(control, timeout_s=2, curve_keys=keys) as c:
            st = c.request("ps")
        return st if all(n["state"] == "running" and n["fps"] > 0 for n in st["nodes"]) else None

    # the authorized client is answered; every actor got in too (over CURVE, with the run's own key)
    status = wait_for(ps_with_keys, 30, "every node running, asked over CURVE")
    assert status["control_public"] == control and status["events_public"] == events

    mine = client_keys(keys)
    theirs = client_keys(other)
    _no_answer(ControlClient(control, timeout_s=1.5))                                     # no CURVE at all
    _no_answer(_client(control, {**mine, "public": theirs["public"], "secret": theirs["secret"]}))  # unknown key
    _no_answer(_client(control, {**mine, "server": theirs["server"]}))                    # wrong server key
    info = eng.info()
    assert info is not None and info["curve_keys"] == str(keys.resolve())
    _no_answer(ControlClient(str(info["control"]), timeout_s=1.5))  # the local ipc socket is the same CURVE socket

    # events: the authorized subscriber gets metrics, the others never get connected
    sub = Subscriber(events, ("metrics.",), curve_keys=keys)
    try:
        sub.wait_connected(5)
        msg = sub.recv(5000)
        assert msg is not None and msg[0].startswith("metrics.")
    finally:
        sub.close()
    for bad_keys in (None, other):
        intruder = Subscriber(events, ("",), curve_keys=None)
        if bad_keys is not None:  # a client keypair the engine does not know, with the right server key
            intruder.close()
            intruder = Subscriber(events, ("",), curve_keys=_foreign_dir(tmp_path, keys, other))
        try:
            with pytest.raises(TimeoutError_):
                intruder.wait_connected(1.5)
            assert intruder.recv(1500) is None
        finally:
            intruder.close()

    # a client key dropped into authorized_clients/ is accepted from the next connection on
    shutil.copy(other / "client.key", keys / "authorized_clients" / "other.key")
    with _client(control, {**theirs, "server": mine["server"]}, timeout_s=3) as c:
        assert c.request("ping")["engine_id"] == status["engine_id"]

    # tools: local ones find the keys through engine.json, remote ones take --curve-keys
    env_dir = eng.runtime_dir
    ps = cli(env_dir, "ps", "--json")
    assert ps.returncode == 0, ps.stderr
    assert len(json.loads(ps.stdout)["engines"][0]["nodes"]) == 7
    remote = cli(env_dir, "monitor", control, "--curve-keys", str(keys), "--json", "--once")
    assert remote.returncode == 0, remote.stderr
    view = json.loads(remote.stdout)
    assert view["engine_id"] == status["engine_id"] and all(n["state"] == "running" for n in view["nodes"])
    refused = cli(env_dir, "monitor", control, "--once")
    assert refused.returncode == 1 and "needs --curve-keys" in refused.stderr, refused.stderr
    with ApiEngine.attach(control=control, curve_keys=keys) as api:
        assert api.events == events
        assert api.ps()["engine_id"] == status["engine_id"]

    with ControlClient(control, curve_keys=keys) as c:
        c.request("stop")
    assert eng.wait(30) == 0, eng.log


def _foreign_dir(tmp_path: Path, keys: Path, other: Path) -> Path:
    """A keys dir with the engine's server public key but an unauthorized client keypair."""
    d = tmp_path / "foreign"
    if not d.exists():
        d.mkdir(mode=0o700)
        shutil.copy(keys / "server.key", d / "server.key")
        shutil.copy(other / "client.key_secret", d / "client.key_secret")
    return d
