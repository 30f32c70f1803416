"""Draw a topology: Graphviz DOT text, and SVG/PNG/PDF through the `dot` program.

Nodes are labelled ``id\\nkind`` (plus the restart type when it is not `permanent`); sources are
drawn as `invhouse`, sinks as `house`, everything else as a rounded box.  Edges are labelled with
their pads and format (``out→in\\nvideo rgb24 640x360@30``); edges with a drop policy are dashed
(`drop_oldest`) or dotted (`drop_newest`), `block` edges are solid.  Supervision groups are drawn as
clusters titled with their strategy.  `mediaengine graph` uses this without running anything.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..sdk.errors import ResourceError
from .loader import NodeSpec, Topology

#: suffix -> `dot -T` format; `.dot` / `.gv` are written directly
RENDERED = {".svg": "svg", ".png": "png", ".pdf": "pdf"}
TEXT = (".dot", ".gv")
EDGE_STYLE = {"block": "solid", "drop_oldest": "dashed", "drop_newest": "dotted"}


def _quote(text: str) -> str:
    """A DOT double-quoted string; a real newline becomes the `\\n` escape (centred line break)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _shape(node: NodeSpec) -> str:
    if node.is_source:
        return "invhouse"
    if not node.output_formats:
        return "house"
    return "box"


def _node_line(node: NodeSpec, indent: str) -> str:
    label = f"{node.id}\n{node.kind}"
    if node.restart != "permanent":
        label += f"\n({node.restart})"
    style = ', style="rounded"' if _shape(node) == "box" else ""
    return f"{indent}{_quote(node.id)} [label={_quote(label)}, shape={_shape(node)}{style}];"


def to_dot(topology: Topology) -> str:
    """The topology as a DOT digraph, left to right in signal-chain order."""
    lines = [f"digraph {_quote(topology.name)} {{",
             "  rankdir=LR;",
             '  graph [fontname="Helvetica", fontsize=11];',
             '  node [fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9];']
    grouped = {m for g in topology.groups for m in g.members}
    for group in topology.groups:
        lines.append(f"  subgraph {_quote('cluster_' + group.name)} {{")
        title = f"{group.name}: {group.strategy}, {group.intensity} in {group.period_s:g}s"
        lines.append(f"    label={_quote(title)}; style=dashed;")
        lines.extend(_node_line(topology.node(m), "    ") for m in group.members)
        lines.append("  }")
    lines.extend(_node_line(n, "  ") for n in topology.nodes if n.id not in grouped)
    for e in topology.edges:
        label = f"{e.src_pad}→{e.dst_pad}\n{e.format.describe()}"
        attrs = f"label={_quote(label)}, style={EDGE_STYLE.get(e.policy, 'solid')}"
        attrs += f", tooltip={_quote('policy: ' + e.policy)}"
        lines.append(f"  {_quote(e.src)} -> {_quote(e.dst)} [{attrs}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(topology: Topology, out_path: Path) -> None:
    """Write the graph to `out_path`: DOT text for `.dot`/`.gv`, else rendered by Graphviz by suffix."""
    out_path = Path(out_path)
    suffix = out_path.suffix.lower()
    text = to_dot(topology)
    if suffix in TEXT:
        out_path.write_text(text, encoding="utf-8")
        return
    if suffix not in RENDERED:
        known = ", ".join((*TEXT, *RENDERED))
        raise ResourceError(f"cannot draw to {suffix or 'a file without suffix'!r}; use one of {known}",
                            where=str(out_path))
    dot = shutil.which("dot")
    if dot is None:
        raise ResourceError("Graphviz `dot` is not installed; install it with `apt-get install graphviz` "
                            "or write a .dot file instead", where=str(out_path))
    try:
        proc = subprocess.run([dot, f"-T{RENDERED[suffix]}", "-o", str(out_path)], input=text.encode(),
                              capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ResourceError(f"running Graphviz `dot` failed: {exc}", where=str(out_path)) from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise ResourceError(f"Graphviz `dot` failed (exit {proc.returncode}): {err}", where=str(out_path))
