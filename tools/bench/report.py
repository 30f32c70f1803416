"""`python -m tools.bench report RUN.json [-o BENCHMARKS.md]`: BENCHMARKS.md's figures from a `--json` run.

BENCHMARKS.md is prose written by hand around blocks that this script writes: every figure in it comes
from one run's JSON, none is typed by hand.  A block is the text between

    <!-- generated:NAME -->   and   <!-- /generated:NAME -->

where NAME is `run` (machine, versions, mode, load), `targets` (every target of every benchmark) or a
benchmark's name (its tables, notes, targets, load and headline).  The script replaces what is between
the markers and leaves everything else alone; a block whose benchmark is not in the JSON says so.
Without `-o` the blocks are printed.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MARKER = re.compile(r"(<!-- generated:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated:(?P=name) -->)", re.S)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _load(result: dict[str, Any]) -> str:
    before, after = (result.get("load") or [math.nan, math.nan])[:2]
    if before is None or (isinstance(before, float) and math.isnan(before)):
        return ""
    return f"took {result.get('seconds', 0):g} s; 1-minute load average {before:.2f} before, {after:.2f} after"


def _mark(t: dict[str, Any]) -> str:
    return "met" if t["met"] else "**MISSED**"


def _value(t: dict[str, Any]) -> str:
    v = t["value"]
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"


def block_run(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    rows = [
        ("mode", f"{doc['mode']} (`python -m tools.bench{' --quick' if doc['mode'] == 'quick' else ''}`)"),
        ("started", m["date"]),
        ("CPU", f"{m['nproc']} x {m['cpu']}, kernel {m.get('kernel', '?')}"),
        ("load at start (1, 5, 15 min)", ", ".join(f"{x:.2f}" for x in m["loadavg"])),
        ("Python", f"{m['python']}, numpy {m.get('numpy', '?')}, pyzmq {m.get('pyzmq', '?')} "
                   f"(libzmq {m.get('libzmq', '?')})"),
        ("PyAV", f"{m['pyav']} (libavcodec {m['pyav_libavcodec']})"),
        ("ffmpeg CLI", m["ffmpeg_cli"]),
    ]
    loads = [(r["name"], r.get("load") or []) for r in doc["results"]]
    peak = max((x for _n, ld in loads for x in ld if isinstance(x, int | float) and not math.isnan(x)),
               default=math.nan)
    rows.append(("highest 1-minute load seen (2 cores)", "n/a" if math.isnan(peak) else f"{peak:.2f}"))
    text = md_table(["", ""], rows)
    if not math.isnan(peak) and m.get("nproc") and peak >= 0.5 * m["nproc"]:
        text += ("\n\n**The machine was loaded** during this run (other work shared its cores: the load "
                 "average above is not the benchmark alone).  Absolute figures move with the load; the "
                 "ratios measured in the same run are what the targets use.")
    return text


def block_targets(doc: dict[str, Any]) -> str:
    rows = []
    for r in doc["results"]:
        for t in r.get("targets", []):
            rows.append((r["name"], t["what"], f"{t['op']} {t['limit']:g}", _value(t), _mark(t)))
    if not rows:
        return "_no targets in this run_"
    return md_table(["benchmark", "target", "limit", "measured (median)", ""], rows)


def block_result(r: dict[str, Any]) -> str:
    out: list[str] = []
    if r.get("error"):
        lines = r["error"].splitlines()
        out.append(f"**failed:** `{lines[0]}`")
        if len(lines) > 1:
            out.append("```\n" + "\n".join(lines[1:16]) + "\n```")
    if r.get("skipped"):
        out.append(f"**skipped:** {r['skipped']}")
    for title, table in (r.get("tables") or {}).items():
        if not title.isdigit():
            out.append(title[0].upper() + title[1:] + ":")
        out.append(md_table(table["headers"], table["rows"]))
    notes = [n for n in r.get("notes", []) if not n.startswith("Traceback")]
    out += [f"Note: {n}" for n in notes]
    if r.get("targets"):
        out.append(md_table(["target", "limit", "measured", ""],
                            [(t["what"], f"{t['op']} {t['limit']:g}", _value(t), _mark(t)) for t in r["targets"]]))
    load = _load(r)
    if load:
        out.append(load.capitalize() + ".")
    headline = r.get("headline") or r.get("skipped") or r.get("error") or "n/a"
    out.append(f"headline: {headline.splitlines()[0]}")
    return "\n\n".join(out)


def blocks(doc: dict[str, Any]) -> dict[str, str]:
    """NAME -> generated Markdown for every block the JSON can fill."""
    out = {"run": block_run(doc), "targets": block_targets(doc)}
    for r in doc["results"]:
        out[r["name"]] = block_result(r)
    return out


def fill(text: str, generated: dict[str, str], source: str) -> str:
    """`text` with every generated block replaced; a block the run does not cover says so."""

    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        body = generated.get(name, f"_`{name}` was not in this run._")
        return f"{m.group(1)}<!-- from {source}: do not edit by hand, run `python -m tools.bench report` -->\n\n" \
               f"{body}\n\n{m.group(4)}"

    return MARKER.sub(sub, text)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench report", description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, help="a run's --json output")
    p.add_argument("-o", "--output", type=Path, default=None, help="the Markdown file whose blocks to fill")
    args = p.parse_args(argv)
    doc = json.loads(args.json.read_text())
    generated = blocks(doc)
    if args.output is None:
        for name, body in generated.items():
            print(f"<!-- generated:{name} -->\n{body}\n<!-- /generated:{name} -->\n")
        return 0
    text = args.output.read_text()
    names = {m.group("name") for m in MARKER.finditer(text)}
    if not names:
        print(f"{args.output} has no <!-- generated:NAME --> blocks to fill", file=sys.stderr)
        return 2
    args.output.write_text(fill(text, generated, args.json.name))
    print(f"filled {', '.join(sorted(names))} in {args.output} from {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
