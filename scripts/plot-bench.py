#!/usr/bin/env python3
"""Plot how the fleet figures of `cargo bench --bench cluster` scale with N.

Reads the Markdown table the bench writes (default target/bench-cluster.md)
and writes an SVG (default benches/fleet-scaling.svg) with two panels, both
on log-log axes: the wall time of a full pull cycle against N (beside the
SPEC §9 target of 1 s at N = 1000 and a line of slope 1 through N = 10),
and the CPU per agent of the master and of the agents. Standard library
only: no matplotlib on a fresh machine.

    scripts/plot-bench.py [TABLE.md] [OUT.svg]
"""
import math
import re
import sys

table = sys.argv[1] if len(sys.argv) > 1 else "target/bench-cluster.md"
out = sys.argv[2] if len(sys.argv) > 2 else "benches/fleet-scaling.svg"

wall, master_ms, agent_ms = {}, {}, {}
for line in open(table, encoding="utf-8"):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) < 2:
        continue
    m = re.match(r"N = (\d+): (.*)", cells[0])
    if not m:
        continue
    n, what = int(m.group(1)), m.group(2)
    if what.startswith("full pull cycle") and "on disk" in what:
        v = re.match(r"([\d.]+) s median", cells[1])
        if v:
            wall[n] = float(v.group(1))
    if what.startswith("CPU per cycle, agents and master on disk"):
        v = re.search(r"master \(`pihealth pull`\) [\d.]+ s \(([\d.]+) ms per agent", cells[1])
        if v:
            master_ms[n] = float(v.group(1))
        v = re.search(r"agents [\d.]+ s \(([\d.]+) ms per agent\)", cells[1])
        if v:
            agent_ms[n] = float(v.group(1))

if not wall:
    sys.exit(f"{table}: no fleet rows (run `cargo bench --bench cluster` first)")

W, H, PAD = 420, 300, 55


def panel(x0, title, series, ylabel, extra=()):
    """One log-log panel: series is [(label, colour, {n: value})]."""
    xs = sorted({n for _, _, s in series for n in s} | {10, 1000})
    ys = [v for _, _, s in series for v in s.values()] + [y for _, _, y in extra]
    lo_x, hi_x = math.log10(min(xs)), math.log10(max(xs))
    lo_y = math.floor(math.log10(min(ys)))
    hi_y = math.ceil(math.log10(max(ys)))
    hi_y = max(hi_y, lo_y + 1)

    def px(n):
        return x0 + PAD + (math.log10(n) - lo_x) / (hi_x - lo_x) * (W - 2 * PAD)

    def py(v):
        return H - PAD + 10 - (math.log10(v) - lo_y) / (hi_y - lo_y) * (H - 2 * PAD)

    parts = [f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>']
    for e in range(lo_y, hi_y + 1):
        y = py(10 ** e)
        parts.append(f'<line x1="{x0 + PAD}" x2="{x0 + W - PAD}" y1="{y}" y2="{y}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 + PAD - 5}" y="{y + 4}" text-anchor="end">{10 ** e:g}</text>')
    for n in xs:
        parts.append(f'<text x="{px(n)}" y="{H - PAD + 28}" text-anchor="middle">{n}</text>')
    parts.append(f'<text x="{x0 + W / 2}" y="{H - 8}" text-anchor="middle">agents (N)</text>')
    parts.append(
        f'<text x="{x0 + 14}" y="{H / 2}" text-anchor="middle" '
        f'transform="rotate(-90 {x0 + 14} {H / 2})">{ylabel}</text>'
    )
    legend_y = 40
    for label, colour, s in series:
        pts = " ".join(f"{px(n):.1f},{py(v):.1f}" for n, v in sorted(s.items()))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for n, v in sorted(s.items()):
            parts.append(f'<circle cx="{px(n):.1f}" cy="{py(v):.1f}" r="3" fill="{colour}"/>')
        parts.append(f'<text x="{x0 + PAD + 8}" y="{legend_y}" fill="{colour}">{label}</text>')
        legend_y += 15
    for label, colour, y in extra:
        parts.append(
            f'<line x1="{x0 + PAD}" x2="{x0 + W - PAD}" y1="{py(y)}" y2="{py(y)}" '
            f'stroke="{colour}" stroke-dasharray="4 3"/>'
        )
        parts.append(f'<text x="{x0 + W - PAD}" y="{py(y) - 4}" text-anchor="end" fill="{colour}">{label}</text>')
    return parts


first = min(wall)
linear = {n: wall[first] * n / first for n in sorted(wall)}
left = panel(
    0,
    "Full pull cycle, N agents × 6 types",
    [("measured", "#1f77b4", wall), ("slope 1 from the smallest N", "#aaa", linear)],
    "wall time (s)",
    extra=[("SPEC §9: 1 s at N = 1000", "#d62728", 1.0)],
)
series = [("master, per agent", "#2ca02c", master_ms)]
if agent_ms:
    series.append(("agents, per agent", "#ff7f0e", agent_ms))
right = panel(W, "CPU per agent in a cycle", series, "CPU (ms)") if master_ms else []

svg = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H}" '
    'font-family="sans-serif" font-size="11">',
    f'<rect width="{2 * W}" height="{H}" fill="white"/>',
    *left,
    *right,
    "</svg>",
]
with open(out, "w", encoding="utf-8") as f:
    f.write("\n".join(svg) + "\n")
print(f"wrote {out} ({len(wall)} fleet sizes)")
