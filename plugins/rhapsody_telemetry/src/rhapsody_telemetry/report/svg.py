"""Small inline-SVG charts: no plotting library, no script, nothing fetched."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 920, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 16, 44  # the right margin holds the legend
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
STATUS_COLORS = {"completed": "#2e7d32", "failed": "#c62828", "canceled": "#9e9e9e", "waiting": "#bbdefb"}


def _nice(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.3g}"
    return f"{value:.2g}"


class Frame:
    """Maps data coordinates to the plot area of one chart and draws its axes."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, height: int = HEIGHT, left: int = LEFT) -> None:
        self.x0, self.x1 = x0, x1 if x1 > x0 else x0 + 1
        self.y0, self.y1 = y0, y1 if y1 > y0 else y0 + 1
        self.height, self.left = height, left
        self.plot_w, self.plot_h = WIDTH - left - RIGHT, height - TOP - BOTTOM

    def x(self, value: float) -> float:
        return self.left + (value - self.x0) / (self.x1 - self.x0) * self.plot_w

    def y(self, value: float) -> float:
        return TOP + self.plot_h - (value - self.y0) / (self.y1 - self.y0) * self.plot_h

    def axes(self, xlabel: str, ylabel: str, y_ticks: bool = True, x_ticks: bool = True) -> str:
        bottom, left, parts = TOP + self.plot_h, self.left, []
        parts.append(f'<line x1="{left}" y1="{bottom}" x2="{left + self.plot_w}" y2="{bottom}" class="axis"/>')
        parts.append(f'<line x1="{left}" y1="{TOP}" x2="{left}" y2="{bottom}" class="axis"/>')
        for i in range(6 if x_ticks else 0):
            value = self.x0 + (self.x1 - self.x0) * i / 5
            px = self.x(value)
            parts.append(f'<text x="{px:.1f}" y="{bottom + 16}" class="tick" text-anchor="middle">{_nice(value)}</text>')
        if y_ticks:
            for i in range(5):
                value = self.y0 + (self.y1 - self.y0) * i / 4
                py = self.y(value)
                parts.append(f'<line x1="{left}" y1="{py:.1f}" x2="{left + self.plot_w}" y2="{py:.1f}" class="grid"/>')
                parts.append(f'<text x="{left - 6}" y="{py + 4:.1f}" class="tick" text-anchor="end">{_nice(value)}</text>')
        parts.append(f'<text x="{left + self.plot_w / 2}" y="{self.height - 6}" class="label" text-anchor="middle">{escape(xlabel)}</text>')
        parts.append(
            f'<text x="14" y="{TOP + self.plot_h / 2}" class="label" transform="rotate(-90 14 {TOP + self.plot_h / 2})" text-anchor="middle">{escape(ylabel)}</text>'
        )
        return "".join(parts)


#: in every chart, so that one saved on its own looks the same as in the page
CHART_STYLE = (
    "<style>.axis{stroke:#444}.grid{stroke:#eee}.tick{font:10px sans-serif;fill:#444}"
    ".label{font:11px sans-serif;fill:#222}</style><rect width='100%' height='100%' fill='white'/>"
)


def document(body: str, height: int = HEIGHT) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">'
        f"{CHART_STYLE}{body}</svg>"
    )


def legend(entries: Sequence[tuple[str, str]]) -> str:
    x, parts = WIDTH - RIGHT + 12, []
    for i, (name, color) in enumerate(entries[:14]):
        y = TOP + 6 + i * 16
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color}"/>')
        short = name if len(name) <= 22 else "…" + name[-21:]  # node addresses differ at their end
        parts.append(f'<text x="{x + 14}" y="{y}" class="tick">{escape(short)}<title>{escape(name)}</title></text>')
    return "".join(parts)


def line_chart(
    series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, y_max: float | None = None, step: bool = False
) -> str:
    points = [p for values in series.values() for p in values]
    if not points:
        return empty("no data")
    top = y_max if y_max is not None else max(max(y for _, y in points) * 1.05, 1e-9)
    frame = Frame(min(x for x, _ in points), max(x for x, _ in points), 0.0, top)
    parts, entries = [frame.axes(xlabel, ylabel)], []
    for i, (name, values) in enumerate(sorted(series.items())):
        color = PALETTE[i % len(PALETTE)]
        entries.append((name, color))
        coords: list[str] = []
        previous_y: float | None = None
        for x, y in values:
            if step and previous_y is not None:
                coords.append(f"{frame.x(x):.1f},{frame.y(previous_y):.1f}")
            coords.append(f"{frame.x(x):.1f},{frame.y(y):.1f}")
            previous_y = y
        parts.append(
            f'<polyline points="{" ".join(coords)}" fill="none" stroke="{color}" stroke-width="1.5"><title>{escape(name)}</title></polyline>'
        )
    parts.append(legend(entries))
    return document("".join(parts))


def bar_chart(groups: dict[str, dict[str, int]], ylabel: str, colors: dict[str, str]) -> str:
    labels = [label for label in colors if any(label in g for g in groups.values())]
    if not groups or not labels:
        return empty("no tasks")
    top = max(max(g.values(), default=0) for g in groups.values()) * 1.1 or 1
    frame = Frame(0, 1, 0, top)
    parts = [frame.axes("backend", ylabel, x_ticks=False)]  # the groups label the x axis
    slot = frame.plot_w / len(groups)
    width = slot * 0.8 / len(labels)
    for gi, (group, counts) in enumerate(sorted(groups.items())):
        gx = LEFT + gi * slot + slot * 0.1
        for li, label in enumerate(labels):
            value = counts.get(label, 0)
            x, y = gx + li * width, frame.y(value)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width * 0.9:.1f}" height="{frame.y(0) - y:.1f}" fill="{colors[label]}">'
                f"<title>{escape(group)} {escape(label)}: {value}</title></rect>"
            )
            parts.append(f'<text x="{x + width * 0.45:.1f}" y="{y - 3:.1f}" class="tick" text-anchor="middle">{value}</text>')
        parts.append(f'<text x="{gx + slot * 0.4:.1f}" y="{frame.y(0) + 16}" class="tick" text-anchor="middle">{escape(group)}</text>')
    parts.append(legend([(label, colors[label]) for label in labels]))
    return document("".join(parts))


def histogram(values: dict[str, list[float]], xlabel: str, bins: int = 30) -> str:
    every = [v for vs in values.values() for v in vs]
    if not every:
        return empty("no data")
    low, high = min(every), max(every)
    high = high if high > low else low + 1e-6
    width = (high - low) / bins
    counts = {name: [0] * bins for name in values}
    for name, vs in values.items():
        for v in vs:
            counts[name][min(int((v - low) / width), bins - 1)] += 1
    frame = Frame(low, high, 0, max(max(c) for c in counts.values()) * 1.1 or 1)
    parts, entries = [frame.axes(xlabel, "tasks")], []
    for i, (name, bucket) in enumerate(sorted(counts.items())):
        color = PALETTE[i % len(PALETTE)]
        entries.append((name, color))
        for b, n in enumerate(bucket):
            if n:
                x0, x1, y = frame.x(low + b * width), frame.x(low + (b + 1) * width), frame.y(n)
                parts.append(
                    f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" height="{frame.y(0) - y:.1f}" fill="{color}" fill-opacity="0.6">'
                    f"<title>{escape(name)}: {n} tasks in [{_nice(low + b * width)}, {_nice(low + (b + 1) * width)}) s</title></rect>"
                )
    parts.append(legend(entries))
    return document("".join(parts))


#: widest lane label of a timeline, in characters (at ~6 px each); longer ones keep their end
MAX_LANE_LABEL = 40


def timeline(lanes: list[tuple[str, list[tuple[float, float, str, str]]]], t1: float, xlabel: str) -> str:
    """One row per lane; each bar: (start, end, color, tooltip), seconds from
    the run's start. A labelled lane starts a group (a backend's worker), the
    unlabelled ones after it belong to it; a rule separates the groups."""
    if not lanes:
        return empty("no tasks")
    row = max(3.0, min(14.0, 400 / len(lanes)))
    height = int(TOP + BOTTOM + row * len(lanes)) + 4
    widest = max(len(_lane_label(label)) for label, _ in lanes)
    frame = Frame(0, max(t1, 1e-3), 0, len(lanes), height=height, left=max(LEFT, 10 + 6 * widest))
    parts = [frame.axes(xlabel, "", y_ticks=False)]
    for index, (label, bars) in enumerate(lanes):
        y = TOP + index * row
        if label and index:
            parts.append(f'<line x1="{frame.left}" y1="{y:.1f}" x2="{frame.left + frame.plot_w}" y2="{y:.1f}" class="grid"/>')
        if label and row >= 9:
            parts.append(
                f'<text x="{frame.left - 4}" y="{y + row - 2:.1f}" class="tick" text-anchor="end">'
                f"{escape(_lane_label(label))}<title>{escape(label)}</title></text>"
            )
        for start, end, color, tip in bars:
            x0 = frame.x(start)
            parts.append(
                f'<rect x="{x0:.1f}" y="{y:.1f}" width="{max(frame.x(end) - x0, 0.6):.1f}" height="{row * 0.8:.1f}" fill="{color}"><title>{escape(tip)}</title></rect>'
            )
    parts.append(legend([(k, v) for k, v in STATUS_COLORS.items()]))
    return document("".join(parts), height)


def _lane_label(label: str) -> str:
    return label if len(label) <= MAX_LANE_LABEL else "…" + label[-(MAX_LANE_LABEL - 1) :]  # addresses differ at their end


def empty(why: str) -> str:
    return document(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" class="label" text-anchor="middle">{escape(why)}</text>', 60)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)
