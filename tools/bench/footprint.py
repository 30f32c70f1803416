"""Benchmark `footprint`: CPU % and RSS per actor of the demo and push topologies at steady state.

Runs `topologies/demo.yaml` (recording into a temporary directory) and `topologies/push_rtmp.yaml`
(pushing to a local nginx-rtmp) as shipped, waits until every node has published metrics and the
warm-up is over, then reads the supervisor's `ps` reply once a second: each node's `cpu_pct` and
`rss_bytes` (the runtime's own per-process metrics).  The supervisor and the fork server are not
actors; their share comes from /proc (whole tree minus the actors) over the same window, as does the
tree's PSS (RSS counts the fork server's preloaded pages once per actor; PSS splits them).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from tools.rtmp_server import RtmpServer

from ._common import Result, Settings, Spread, Table, fmt_mb, fmt_pct, fmt_x
from ._engine import ROOT, BenchEngine
from ._procs import TreeSampler
from ._push import set_sender_url, shipped_push_topology

NAME = "footprint"


def measure(topo: dict[str, Any], settings: Settings, args: list[str]) -> dict[str, Any]:
    samples = settings.n(6, 3)
    with BenchEngine.start(topo, settings.workdir, *args) as eng:
        eng.wait_running()
        eng.wait_metrics()
        time.sleep(settings.secs(3.0, 1.5))
        sampler = TreeSampler([eng.pid], interval_s=0.5)
        sampler.start()
        per_node: dict[str, dict[str, Any]] = {}
        for _ in range(samples):
            time.sleep(1.05)
            for n in eng.ps()["nodes"]:
                m = n.get("metrics") or {}
                d = per_node.setdefault(n["id"], {"kind": n["kind"], "cpu": [], "rss": [], "fps": []})
                d["cpu"].append(float(m.get("cpu_pct", float("nan"))))
                d["rss"].append(float(m.get("rss_bytes", float("nan"))))
                d["fps"].append(float(n.get("fps", 0.0)))
        sampler.stop()
        pids = eng.node_pids()
        eng.check_alive()
        eng.stop()
    by_pid = sampler.cpu_by_pid()
    for nid, d in per_node.items():
        d["proc_cpu_pct"] = 100 * by_pid.get(pids.get(nid, -1), float("nan")) / sampler.wall_s
    actors_cpu = 100 * sum(by_pid.get(pid, 0.0) for pid in pids.values()) / sampler.wall_s
    tree_pct = 100 * sampler.cpu_s / sampler.wall_s
    return {"nodes": per_node, "tree_cpu_pct": tree_pct, "other_cpu_pct": tree_pct - actors_cpu,
            "actors_cpu_pct": actors_cpu, "window_s": sampler.wall_s,
            "rss_sum": sum(Spread.of(d["rss"]).median for d in per_node.values()),
            "tree_peak_rss": sampler.peak_rss, "tree_peak_pss": sampler.peak_pss}


def _table(fig: dict[str, Any]) -> Table:
    t = Table(["node", "kind", "fps", "CPU % (metrics)", "CPU % (/proc, window)", "RSS (metrics)"])
    for nid, d in fig["nodes"].items():
        t.add(nid, d["kind"], f"{Spread.of(d['fps']).median:.1f}", Spread.of(d["cpu"]).fmt(fmt_pct),
              fmt_pct(d["proc_cpu_pct"]), Spread.of(d["rss"]).fmt(fmt_mb))
    t.add("supervisor + fork server", "-", "-", "-", fmt_pct(fig["other_cpu_pct"]), "-")
    t.add("total", "", "", "", fmt_pct(fig["tree_cpu_pct"]),
          f"{fmt_mb(fig['rss_sum'])} (tree PSS {fmt_mb(fig['tree_peak_pss'])})")
    return t


def run(settings: Settings) -> Result:
    res = Result(NAME)
    work = Path(settings.workdir)
    demo = yaml.safe_load((ROOT / "topologies" / "demo.yaml").read_text())
    figs: dict[str, dict[str, Any]] = {}
    figs["demo"] = measure(demo, settings, ["--set", f"rec.path={work / 'demo.mp4'}",
                                            "--set", f"snap.path={work / 'demo.png'}"])
    server = RtmpServer(work / "rtmp-footprint")
    server.start()
    try:
        figs["push"] = measure(set_sender_url(shipped_push_topology(), server.url(stream="footprint")),
                               settings, [])
    finally:
        server.stop()
    for name, fig in figs.items():
        n = len(next(iter(fig["nodes"].values()))["cpu"])
        res.tables.append((f"topologies/{name if name == 'demo' else 'push_rtmp'}.yaml at steady state: median "
                           f"[min..max] of {n} one-second metrics", _table(fig)))
    res.data = figs
    heaviest = {name: max(f["nodes"].items(), key=lambda kv: float(kv[1]["proc_cpu_pct"])) for name, f in figs.items()}
    parts = []
    for name, f in figs.items():
        nid, d = heaviest[name]
        share = 100 * d["proc_cpu_pct"] / f["tree_cpu_pct"] if f["tree_cpu_pct"] else float("nan")
        parts.append(f"{name}: {fmt_pct(f['tree_cpu_pct'])} of a core, PSS {fmt_mb(f['tree_peak_pss'])} "
                     f"({len(f['nodes'])} actors; {nid} takes {fmt_pct(share)} of it)")
    if "push" in figs and figs["demo"]["tree_cpu_pct"]:
        parts.append(f"push/demo CPU {fmt_x(figs['push']['tree_cpu_pct'] / figs['demo']['tree_cpu_pct'])}")
    res.headline = "; ".join(parts)
    return res
