"""The bench report: one self-contained HTML page (inline SVG, no dependency) from the
driver's results.json.

    .venv/bin/python -m bench.report bench/results/<timestamp>/results.json  # rewrites report.html

Sections: the targets (figure, ceiling, ratio, MET / MISSED); throughput per figure with its
ceilings beside it (one bar group per figure, bars to the group's own scale, since a
Transfer and a batch of 500 splits differ by orders of magnitude); p99 latency likewise;
the server's RSS over the sale-day hold; errors by status code; the machine, the commit and
the parameters.
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

BAR_W = 440
BAR_H = 18
LABEL_W = 380
LABEL_CHARS = 58
VALUE_W = 230
COLORS = {"figure": "#2f6fb0", "ceiling": "#b9c7d6", "target": "#c0392b"}


def _e(x) -> str:
    return html.escape(str(x))


def _num(x, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def bar_group(title: str, bars: list[tuple[str, float | None, str, str]]) -> str:
    """One SVG block: `bars` of (label, value, colour, value text), scaled to their max."""
    vals = [v for _, v, _, _ in bars if v]
    top = max(vals) if vals else 1.0
    h = BAR_H * len(bars) + 28
    out = [f'<svg width="{LABEL_W + BAR_W + VALUE_W}" height="{h}" role="img">',
           f'<text x="0" y="14" font-weight="bold">{_e(title)}</text>']
    for i, (label, value, colour, text) in enumerate(bars):
        y = 22 + i * BAR_H
        w = 0 if not value else max(1, int(BAR_W * value / top))
        out.append(f'<text x="0" y="{y + 13}">{_e(label[:LABEL_CHARS])}</text>')
        out.append(f'<rect x="{LABEL_W}" y="{y + 2}" width="{w}" height="{BAR_H - 4}" '
                   f'fill="{colour}"/>')
        out.append(f'<text x="{LABEL_W + w + 6}" y="{y + 13}">{_e(text)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def throughput_charts(figures: list[dict]) -> str:
    blocks = []
    for f in figures:
        bars = [(f"this run: {f['name']}", f["units_per_s"], COLORS["figure"],
                 f"{_num(f['units_per_s'])} /s")]
        for c in f["ceilings"]:
            bars.append((f"ceiling: {c['name']}", c["units_per_s"], COLORS["ceiling"],
                         f"{_num(c['units_per_s'])} /s  (ratio {_num(c['ratio'], '.3f')})"))
        blocks.append(bar_group(f["name"], bars))
    return "\n".join(blocks)


def latency_charts(figures: list[dict]) -> str:
    blocks = []
    for f in figures:
        p99 = f["latency_ms"].get("p99")
        bars = [(f"this run p99: {f['name']}", p99, COLORS["figure"], f"{_num(p99, '.2f')} ms")]
        for c in f["ceilings"]:
            bars.append((f"ceiling p99: {c['name']}", c["p99_ms"], COLORS["ceiling"],
                         f"{_num(c['p99_ms'], '.2f')} ms"))
        blocks.append(bar_group(f"{f['name']} (p50 {_num(f['latency_ms'].get('p50'), '.2f')}"
                                f", p99.9 {_num(f['latency_ms'].get('p99.9'), '.2f')} ms)",
                                bars))
    return "\n".join(blocks)


def rss_chart(phase: dict) -> str:
    rss = phase.get("rss") or {}
    samples = rss.get("samples") or []
    if len(samples) < 2:
        return "<p>no RSS samples</p>"
    w, h, pad = 700, 220, 50
    t_max = max(t for t, _ in samples) or 1.0
    b_max = max(b for _, b in samples) * 1.15 or 1
    pts = " ".join(f"{pad + (w - pad - 10) * t / t_max:.1f},"
                   f"{h - 30 - (h - 50) * b / b_max:.1f}" for t, b in samples)
    warm = rss.get("warmup_s", phase.get("warmup_s", 0.0))
    x_warm = pad + (w - pad - 10) * warm / t_max
    out = [f'<svg width="{w}" height="{h}" role="img">',
           f'<line x1="{pad}" y1="{h - 30}" x2="{w - 10}" y2="{h - 30}" stroke="#888"/>',
           f'<line x1="{pad}" y1="20" x2="{pad}" y2="{h - 30}" stroke="#888"/>',
           f'<polyline fill="none" stroke="{COLORS["figure"]}" stroke-width="2" '
           f'points="{pts}"/>',
           f'<line x1="{x_warm:.1f}" y1="20" x2="{x_warm:.1f}" y2="{h - 30}" '
           f'stroke="{COLORS["target"]}" stroke-dasharray="4"/>',
           f'<text x="{x_warm + 4:.1f}" y="32">end of warm-up</text>',
           f'<text x="{pad}" y="{h - 10}">0 s</text>',
           f'<text x="{w - 60}" y="{h - 10}">{t_max:.0f} s</text>',
           f'<text x="0" y="28">{b_max / 2**20:.0f} MiB</text>',
           f'<text x="0" y="{h - 32}">0</text>', "</svg>"]
    g = rss.get("growth")

    def mib(key: str) -> str:
        return _num((rss.get(key) or 0) / 2**20, ".1f")

    return ("\n".join(out) + f"<p>after warm-up {mib('after_warmup_bytes')} MiB, peak "
            f"{mib('peak_bytes')} MiB, last {mib('last_bytes')} MiB: growth "
            f"{'-' if g is None else f'{g:.1%}'}</p>")


def targets_table(figures: list[dict]) -> str:
    rows = ["<tr><th>figure</th><th>units/s</th><th>p99 ms</th><th>errors</th>"
            "<th>ceiling: units/s (ratio)</th><th>target</th><th>verdict</th></tr>"]
    for f in figures:
        verdict = {True: "MET", False: "MISSED", None: ""}[f["met"]]
        colour = {"MET": "#1e7d32", "MISSED": COLORS["target"], "": "#000"}[verdict]
        ceil = "<br>".join(f"{_e(c['name'])}: {_num(c['units_per_s'])} "
                           f"({_num(c['ratio'], '.3f')})" for c in f["ceilings"])
        rows.append(f"<tr><td>{_e(f['name'])}</td><td>{_num(f['units_per_s'])}</td>"
                    f"<td>{_num(f['latency_ms'].get('p99'), '.2f')}</td><td>{f['errors']}</td>"
                    f"<td>{ceil}</td><td>{_e(f['target'])}</td>"
                    f"<td style=\"color:{colour};font-weight:bold\">{verdict}</td></tr>")
    return "<table>" + "\n".join(rows) + "</table>"


def render(doc: dict) -> str:
    figures = doc.get("figures", [])
    phases = doc.get("phases", {})
    holds = [(k, p) for k, p in phases.items() if k.startswith("hold.")]
    errors = {k: {**p["errors"], **{f"warm-up {c}": n for c, n in p["warmup_errors"].items()}}
              for k, p in phases.items() if p["errors"] or p["warmup_errors"]}
    ev = doc.get("eval")
    git = doc.get("git", {})
    provenance = {k: doc.get(k) for k in ("parameters", "machine", "verify")}
    parts = [
        "<!doctype html><html><head><meta charset=\"utf-8\">",
        f"<title>clearing bench {_e(doc.get('timestamp', ''))}</title>",
        "<style>body{font:14px sans-serif;margin:24px;max-width:1100px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top}svg text{font:12px sans-serif}pre{background:#f4f4f4;padding:8px}"
        "</style></head><body>",
        f"<h1>clearing bench {_e(doc.get('timestamp', ''))}</h1>",
        f"<p>commit {_e(git.get('commit', '?'))}"
        f"{' (uncommitted changes)' if git.get('dirty') else ''}"
        f", preset {_e(doc.get('preset', ''))}, {_e(doc.get('machine', {}).get('cpus'))} CPUs "
        f"({_e(doc.get('machine', {}).get('cpu_model', ''))}), PostgreSQL "
        f"{_e(doc.get('machine', {}).get('postgresql', '?'))}. PostgreSQL, Redis, the "
        "servers and the load generators all share this machine.</p>",
        "<p><b>How to read it.</b> Units/s: Transfers or durable splits answered OK per second "
        "in the measured window (a SplitBatch of 500 is 500). The <i>transport ceiling</i> is "
        "a bare grpc.aio server with the same methods and messages and nothing behind them; "
        "the <i>database ceiling</i> is bare asyncpg inserting the same ledger rows in "
        "batches. Ratio = figure / ceiling. Closed-loop latency runs from send to answer; "
        "open-loop latency from the scheduled send time, so queueing shows.</p>",
        "<h2>Targets</h2>", targets_table(figures),
    ]
    if ev:
        parts.append(f"<p>Rule evaluation (compiled b2b plan, warm): {ev['mean_us']:.2f} "
                     f"&micro;s per order (target &lt; {ev['target_us']:g} &micro;s).</p>")
    parts += ["<h2>Throughput, with its ceilings</h2>", throughput_charts(figures),
              "<h2>Latency p99, with the ceiling's</h2>", latency_charts(figures)]
    for key, p in holds:
        parts += [f"<h2>Server RSS over the hold ({_e(key)})</h2>", rss_chart(p)]
    parts += ["<h2>Errors by status code</h2>",
              f"<pre>{_e(json.dumps(errors, indent=2)) if errors else 'none'}</pre>",
              "<h2>Parameters and machine</h2>",
              f"<pre>{_e(json.dumps(provenance, indent=2))}</pre>",
              "</body></html>"]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m bench.report RESULTS_JSON", file=sys.stderr)
        return 2
    path = Path(argv[0])
    out = path.with_name("report.html")
    out.write_text(render(json.loads(path.read_text())))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
