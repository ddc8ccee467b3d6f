#!/usr/bin/env python3
"""Draws Herald's Grafana dashboard into a PNG without Grafana: each panel's
own PromQL queries (deploy/grafana/dashboards/herald.json), run through
Prometheus' query_range API, laid out by the panels' gridPos, drawn with
matplotlib (`pip install matplotlib`). What it shows is the data Grafana
would show; the look is matplotlib's, not Grafana's.

    render_dashboard.py --prometheus http://127.0.0.1:9091 --start 1765000000 --end 1765000600 \\
        --scrape-interval 1 --out assets/dashboard.png

deploy/tools/bench-dashboard.sh runs it after a bench run that a Prometheus
scraped; that is how the README's picture was made.
"""

import argparse
import json
import os
import re
import sys
import textwrap
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dashboard_queries  # noqa: E402

BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
GRID = "#2c3235"
# Grafana's classic palette.
COLOURS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2",
           "#b877d9", "#705da0", "#37872d", "#fade2a", "#c4162a", "#1f60c4"]


def query_range(prometheus, expr, start, end, step):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{params}", timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{expr}: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    if not fmt:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def formatter(unit):
    def seconds(v, _):
        if v == 0:
            return "0"
        if abs(v) < 1e-3:
            return f"{v * 1e6:.0f} µs"
        if abs(v) < 1:
            return f"{v * 1e3:.3g} ms"
        return f"{v:.3g} s"

    def short(v, _):
        if abs(v) >= 1000:
            return f"{v / 1000:.3g} K"
        return f"{v:.3g}"

    return FuncFormatter({
        "s": seconds,
        "percentunit": lambda v, _: f"{v * 100:.0f} %",
        "reqps": lambda v, _: short(v, _) + " req/s",
        "ops": lambda v, _: short(v, _) + "/s",
    }.get(unit, short))


def draw_panel(fig, rect, panel, series, span):
    """`panel` into `rect` (left, bottom, width, height in inches): a box,
    its title, the plot, and the legend under it, as Grafana lays it out."""
    left, bottom, width, height = rect
    W, H = fig.get_size_inches()
    fig.patches.append(plt.Rectangle((left / W, bottom / H), width / W, height / H, transform=fig.transFigure,
                                     facecolor=PANEL, edgecolor=GRID, linewidth=0.8, zorder=-1))
    fig.text((left + 0.12) / W, (bottom + height - 0.1) / H, panel.get("title", ""), color=TEXT, fontsize=10.5,
             weight="bold", ha="left", va="top")
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit = defaults.get("unit", "short")
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal"
    moving = [s for s in series if any(v != 0 for v in s[2] if v == v)]
    zero = len(series) - len(moving)
    labels = [name for name, _, _ in moving]
    if zero:
        # Series that stayed at 0 the whole time share one legend entry.
        labels.append(f"{zero} more at 0 throughout" if moving else f"all {zero} series at 0 throughout")
    ncol = 3 if len(labels) > 4 else 2 if len(labels) > 2 else 1
    legend_h = 0.17 * -(-len(labels) // ncol) + 0.05
    ax = fig.add_axes(((left + 0.75) / W, (bottom + 0.3 + legend_h) / H,
                       (width - 0.9) / W, (height - 0.75 - legend_h) / H))
    ax.set_facecolor(PANEL)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.tick_params(colors=TEXT, labelsize=7.5, length=0)
    ax.grid(color=GRID, linewidth=0.6)
    ax.set_xlim(*span)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=timezone.utc))
    ax.yaxis.set_major_formatter(formatter(unit))
    handles, base = [], None
    for n, (name, times, values) in enumerate(moving):
        colour = COLOURS[n % len(COLOURS)]
        if stacked:
            below = base or [0.0] * len(values)
            top = [b + (v if v == v else 0) for b, v in zip(below, values)]
            ax.fill_between(times, below, top, color=colour, alpha=0.3, linewidth=0)
            handles += ax.plot(times, top, color=colour, linewidth=1.2)
            base = top
        else:
            handles += ax.plot(times, values, color=colour, linewidth=1.2)
    if zero:
        handles += ax.plot([], [], color="#5a5f66", linewidth=1.2)
    if not series:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
    if defaults.get("min") == 0:
        ax.set_ylim(bottom=0)
        if not moving:
            ax.set_ylim(0, 1)
    if labels:
        fig.legend(handles, labels, loc="upper left", bbox_to_anchor=((left + 0.6) / W, (bottom + legend_h + 0.02) / H),
                   fontsize=7.5, frameon=False, labelcolor=TEXT, ncol=ncol, handlelength=1.2, columnspacing=1.5,
                   borderaxespad=0, borderpad=0)


def caption_lines(caption):
    return textwrap.wrap(caption, 190) if caption else []


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--dashboard", default=os.path.join(here, "..", "grafana", "dashboards", "herald.json"))
    p.add_argument("--prometheus", required=True)
    p.add_argument("--start", type=float, required=True, help="unix seconds")
    p.add_argument("--end", type=float, required=True, help="unix seconds")
    p.add_argument("--scrape-interval", type=float, default=15, help="seconds, as Grafana's data source knows it")
    p.add_argument("--caption", default="")
    p.add_argument("--out", required=True)
    args = p.parse_args()

    dashboard = dashboard_queries.load(args.dashboard)
    span_s = args.end - args.start
    step = max(1.0, round(span_s / 400))
    # Grafana's $__rate_interval: max($__interval + scrape interval, 4 x scrape interval).
    rate_interval = f"{int(max(step + args.scrape_interval, 4 * args.scrape_interval))}s"
    shown = [p for p in dashboard_queries.panels(dashboard) if "gridPos" in p]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in shown)

    width, unit, gap = 20.0, 0.42, 0.06  # inches: the page, one grid row, between panels
    col = (width - 0.2) / 24
    header = 0.5 + 0.18 * len(caption_lines(args.caption))
    height = header + rows * unit + 0.15
    fig = plt.figure(figsize=(width, height), dpi=100, facecolor=BACKGROUND)
    fig.text(0.1 / width, 1 - 0.12 / height, dashboard.get("title", ""), ha="left", va="top", color=TEXT,
             fontsize=15, weight="bold")
    for n, line in enumerate(caption_lines(args.caption)):
        fig.text(0.1 / width, 1 - (0.5 + 0.18 * n) / height, line, ha="left", va="top", color=TEXT, fontsize=9)
    span = (datetime.fromtimestamp(args.start, timezone.utc), datetime.fromtimestamp(args.end, timezone.utc))
    for panel in shown:
        g = panel["gridPos"]
        left = 0.1 + g["x"] * col + gap
        bottom = height - header - (g["y"] + g["h"]) * unit + gap
        if panel.get("type") == "row":
            fig.text(left / width, (bottom + 0.05) / height, panel.get("title", ""), color=TEXT, fontsize=12.5,
                     weight="bold", ha="left", va="bottom")
            continue
        series = []
        for target in panel.get("targets", []):
            expr = dashboard_queries.fill(target["expr"], rate_interval)
            for result in query_range(args.prometheus, expr, args.start, args.end, step):
                times = [datetime.fromtimestamp(float(t), timezone.utc) for t, _ in result["values"]]
                values = [float(v) for _, v in result["values"]]
                series.append((legend(target.get("legendFormat"), result["metric"]), times, values))
        draw_panel(fig, (left, bottom, g["w"] * col - 2 * gap, g["h"] * unit - 2 * gap), panel, series, span)
    fig.savefig(args.out, facecolor=BACKGROUND)
    print(f"{args.out}: {len(shown)} panels, {span_s:.0f} s at a {step:.0f} s step, $__rate_interval {rate_interval}")


if __name__ == "__main__":
    main()
