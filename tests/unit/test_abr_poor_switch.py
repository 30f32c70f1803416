"""The rate controller's network events steer a switcher (`abr_poor_switcher`): `network_poor` sets the
switcher's `network_poor` (its "weak network" picture goes out), `network_recovered` clears it.  Driven
through `Adaptive.tick` with a link whose queue grows (congestion) and then drains."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from mediaengine.actors.rtmp_sender.adaptive import PERIOD_NS, Adaptive
from mediaengine.actors.rtmp_sender.options import RtmpSenderOptions
from mediaengine.sdk.actor import Configure, Event


@dataclass
class FakeLink:
    """What the sender's link reports every 250 ms; `rate_kbps` is what the network carries."""

    rate_kbps: float = 4000.0
    acked: float = 0.0
    sent: float = 0.0
    queued_ms: float = 0.0
    video_kbps: float = 2000.0
    filler_kbps: float = 0.0
    plan_kbps: float = 0.0  # set by the controller: what the socket may hold is bounded from it
    skips: int = 0
    log: list[Any] = field(default_factory=list)

    def advance(self, dt_s: float, offered_kbps: float) -> None:
        self.sent += offered_kbps * 125 * dt_s
        carried = min(self.sent - self.acked, self.rate_kbps * 125 * dt_s)
        self.acked += carried
        self.queued_ms = (self.sent - self.acked) / (offered_kbps * 125) * 1000 if offered_kbps else 0.0

    def drop_stale_video(self) -> int:
        """A cut with a long queue drops the queued video: here nothing is queued apart from the bytes."""
        self.skips += 1
        return 0

    def snapshot(self) -> dict[str, Any]:
        return {"state": "connected", "bitrate_kbps": {"video": self.video_kbps, "audio": 64.0},
                "input_kbps": {"video": self.video_kbps, "audio": 64.0},
                "acked_bytes": int(self.acked), "queued_ms": self.queued_ms, "bytes_sent": int(self.sent),
                "backlog_ms": self.queued_ms, "backlog_bytes": 0, "unsent_bytes": 0}


def test_network_poor_and_recovered_set_and_clear_the_switchers_picture() -> None:
    options = replace(RtmpSenderOptions(url="rtmp://127.0.0.1/live/x"), abr="resolution_first", abr_encoder="venc",
                      abr_poor_switcher="sel")
    adaptive = Adaptive(options, {"height": 720, "fps": 30})
    actions = adaptive.start()
    bitrate = next(a.options["bitrate_kbps"] for a in actions if isinstance(a, Configure))
    link = FakeLink()
    switched: list[tuple[float, bool]] = []
    events: list[str] = []
    for step in range(320):  # 80 s: 20 s clear, 15 s at 300 kbit/s, 45 s clear
        t = step * PERIOD_NS / 1e9
        link.rate_kbps = 300.0 if 20 <= t < 35 else 4000.0
        link.video_kbps = bitrate
        link.advance(PERIOD_NS / 1e9, bitrate + 64 + link.filler_kbps)  # the probes' filler is sent too
        for a in adaptive.tick(step * PERIOD_NS, link):  # type: ignore[arg-type]
            if isinstance(a, Configure) and a.node == "venc" and "bitrate_kbps" in a.options:
                bitrate = a.options["bitrate_kbps"]
            elif isinstance(a, Configure) and a.node == "sel":
                switched.append((t, a.options["network_poor"]))
            elif isinstance(a, Event):
                events.append(a.name)
    assert [on for _, on in switched] == [True, False], switched
    print("switcher network_poor set / cleared at (s):", switched)
    assert 20 <= switched[0][0] < 23 and switched[1][0] >= 35, switched
    assert events.count("network_poor") == 1 and events.count("network_recovered") == 1


def test_without_a_switcher_nothing_is_configured_but_the_encoder() -> None:
    options = replace(RtmpSenderOptions(url="rtmp://127.0.0.1/live/x"), abr="resolution_first", abr_encoder="venc")
    adaptive = Adaptive(options, {"height": 720, "fps": 30})
    link = FakeLink(rate_kbps=300.0)
    nodes = set()
    for step in range(40):
        link.advance(PERIOD_NS / 1e9, 2000)
        nodes |= {a.node for a in adaptive.tick(step * PERIOD_NS, link) if isinstance(a, Configure)}  # type: ignore[arg-type]
    assert nodes == {"venc"}
