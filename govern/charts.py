"""Hand-written inline SVG for the lineage report: no script, no external resource, prints well.

Three pictures: the pipeline DAG, a metric across a model's versions, and the
production timeline of each app/env. Each function takes plain data from the
report and returns one `<svg>` element as a string (no XML namespace
attribute is needed for SVG inline in HTML5).
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

# Twelve hues after Okabe & Ito and Paul Tol, darkened where needed to keep 3:1 against the plot and the highlight
# band; ordered so that any five in a row differ most (a metric group of five gets five clearly different hues).
PALETTE = (
    "#0072b2",  # blue
    "#d55e00",  # vermillion
    "#009e73",  # bluish green
    "#aa4499",  # purple
    "#000000",  # black
    "#9a6700",  # ochre
    "#332288",  # indigo
    "#c2185b",  # crimson
    "#117733",  # green
    "#0e7c86",  # teal
    "#882255",  # wine
    "#666666",  # grey
)
# The second cue, for colour-blind readers and for prints in grey: each metric group (the part of the name before
# its first dot: `test`, `validation`) has its own dash pattern and its own marker shape.
DASHES = ("", "6 4", "2 3", "10 3 2 3")
MARKERS = ("circle", "square", "triangle", "diamond")
THIS = "#1f6fb2"
OTHER = "#b0b7c3"
FONT = 'font-family="Helvetica, Arial, sans-serif"'


def _svg(width: float, height: float, body: list[str], title: str) -> str:
    return (
        f'<svg role="img" aria-label="{escape(title)}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="100%" style="max-width:{width:.0f}px" {FONT} font-size="12">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def dag(stages: list[dict[str, Any]], edges: list[list[str]]) -> str:
    """Stages as boxes in columns by depth, arrows from producer to consumer."""
    if not stages:  # a version registered without a recorded pipeline
        return _svg(640, 40, ['<text x="8" y="24">No pipeline stages recorded.</text>'], "Pipeline stages")
    names = [s["name"] for s in stages]
    depth: dict[str, int] = {}

    def level(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            parents = [a for a, b in edges if b == name and a not in seen]
            depth[name] = 1 + max((level(p, seen | {name}) for p in parents), default=-1)
        return depth[name]

    columns: dict[int, list[str]] = {}
    for name in names:
        columns.setdefault(level(name), []).append(name)
    box_w, box_h, gap_x, gap_y, pad = 150, 44, 60, 24, 16
    rows = max((len(c) for c in columns.values()), default=1)
    width = pad * 2 + len(columns) * box_w + (len(columns) - 1) * gap_x
    height = pad * 2 + rows * box_h + (rows - 1) * gap_y
    position = {
        name: (pad + col * (box_w + gap_x), pad + row * (box_h + gap_y))
        for col, members in columns.items()
        for row, name in enumerate(members)
    }
    status = {s["name"]: s.get("status") or "" for s in stages}
    body = [
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker></defs>'
    ]
    for source, target in edges:
        (x1, y1), (x2, y2) = position[source], position[target]
        body.append(
            f'<line x1="{x1 + box_w}" y1="{y1 + box_h / 2}" x2="{x2}" y2="{y2 + box_h / 2}" '
            'stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"/>'
        )
    for name, (x, y) in position.items():
        body.append(
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="6" fill="#eef4fb" stroke="{THIS}"/>'
            f'<text x="{x + box_w / 2}" y="{y + 18}" text-anchor="middle" font-weight="bold">{escape(name)}</text>'
            f'<text x="{x + box_w / 2}" y="{y + 34}" text-anchor="middle" fill="#555">{escape(status[name])}</text>'
        )
    return _svg(width, height, body, "Pipeline stages and their dependencies")


def metric_styles(metrics: list[str]) -> list[tuple[str, str, str]]:
    """Each metric's (colour, dash pattern, marker shape): a hue of its own (up to twelve metrics) and its group's
    dash and marker. Past twelve a hue comes round again, with a dash not yet drawn in it: no two lines look alike
    until 48 metrics."""
    groups: list[str] = []
    styles: list[tuple[str, str, str]] = []
    used: set[tuple[str, str]] = set()
    for number, metric in enumerate(metrics):
        group = metric.split(".", 1)[0] if "." in metric else ""
        if group not in groups:
            groups.append(group)
        index = groups.index(group)
        colour = PALETTE[number % len(PALETTE)]
        preferred = [DASHES[(index + shift) % len(DASHES)] for shift in range(len(DASHES))]
        dash = next((d for d in preferred if (colour, d) not in used), preferred[0])
        used.add((colour, dash))
        styles.append((colour, dash, MARKERS[index % len(MARKERS)]))
    return styles


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "square":
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{colour}"/>'
    if shape == "triangle":
        points = f"{x:.1f},{y - 4.5:.1f} {x + 4.5:.1f},{y + 3.5:.1f} {x - 4.5:.1f},{y + 3.5:.1f}"
        return f'<polygon points="{points}" fill="{colour}"/>'
    if shape == "diamond":
        points = f"{x:.1f},{y - 5:.1f} {x + 5:.1f},{y:.1f} {x:.1f},{y + 5:.1f} {x - 5:.1f},{y:.1f}"
        return f'<polygon points="{points}" fill="{colour}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>'


def metric_history(versions: list[dict[str, Any]], metrics: list[str], current: str) -> str:
    """One line per metric across the model's versions; the reported version is marked. Lines differ in colour
    and, by metric group, in dash and marker; the legend shows all three."""
    width, left, right, top, bottom = 640, 48, 170, 16, 36
    height = max(280, top + 14 + len(metrics) * 18 + 8)  # the legend fits however many metrics there are
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v["metrics"].get(m) for v in versions for m in metrics if v["metrics"].get(m) is not None]
    if not values or not versions:
        return _svg(width, 40, ['<text x="8" y="24">No metrics to chart.</text>'], "Metrics across versions")
    low, high = min(values), max(values)
    margin = (high - low) * 0.15 or abs(high) * 0.01 or 0.01
    low, high = low - margin, high + margin
    if all(0 <= x <= 1 for x in values):
        low, high = max(low, 0.0), min(high, 1.0)
    span = (high - low) or 1.0

    def x_of(index: int) -> float:
        return left + (plot_w * index / (len(versions) - 1) if len(versions) > 1 else plot_w / 2)

    def y_of(value: float) -> float:
        return top + plot_h - (value - low) / span * plot_h

    body = [f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafbfc" stroke="#ccc"/>']
    for tick in range(5):
        value = low + span * tick / 4
        y = y_of(value)
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e3e6ea"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{value:.3g}</text>')
    for index, v in enumerate(versions):
        x = x_of(index)
        if v["version"] == current:
            body.append(f'<rect x="{x - 10:.1f}" y="{top}" width="20" height="{plot_h}" fill="#fff3c4"/>')
        weight = ' font-weight="bold"' if v["version"] == current else ""
        body.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle"{weight}>v{escape(v["version"])}</text>'
        )
    for number, (metric, (colour, dash, shape)) in enumerate(zip(metrics, metric_styles(metrics), strict=True)):
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        points = [
            (x_of(i), y_of(v["metrics"][metric]))
            for i, v in enumerate(versions)
            if v["metrics"].get(metric) is not None
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dashed}/>')
        body.extend(_marker(shape, x, y, colour) for x, y in points)
        ly = top + 14 + number * 18
        lx = width - right + 6
        body.append(
            f'<line x1="{lx}" y1="{ly - 3}" x2="{lx + 22}" y2="{ly - 3}" stroke="{colour}" stroke-width="2"{dashed}/>'
        )
        body.append(_marker(shape, lx + 11, ly - 3, colour))
        body.append(f'<text x="{lx + 28}" y="{ly + 1}">{escape(metric)}</text>')
    return _svg(width, height, body, "Metrics across the model's versions")


def timeline(slots: list[dict[str, Any]], now: str) -> str:
    """One row per app/env; bars are windows, the reported version's in colour, open ones run to now."""
    width, left, right, top, row_h = 720, 150, 20, 26, 34
    windows = [w for s in slots for w in s["windows"]]
    if not windows:
        return _svg(width, 40, ['<text x="8" y="24">Never deployed.</text>'], "Production timeline")
    starts = [_parse(w["start"]) for w in windows]
    ends = [_parse(w["end"] or now) for w in windows]
    first, last = min(starts), max(ends)
    span = (last - first).total_seconds() or 1.0
    plot_w = width - left - right
    height = top + row_h * len(slots) + 30

    def x_of(moment: datetime) -> float:
        return left + (moment - first).total_seconds() / span * plot_w

    body = []
    for index, slot in enumerate(slots):
        y = top + index * row_h
        body.append(f'<text x="{left - 8}" y="{y + 21}" text-anchor="end">{escape(slot["slot"])}</text>')
        body.append(f'<line x1="{left}" y1="{y + row_h - 2}" x2="{left + plot_w}" y2="{y + row_h - 2}" stroke="#eee"/>')
        for w in slot["windows"]:
            x1, x2 = x_of(_parse(w["start"])), x_of(_parse(w["end"] or now))
            colour = THIS if w["this"] else OTHER
            title = f"{w['label']}: {w['start']} to {w['end'] or 'now (still serving)'}"
            body.append(
                f'<rect x="{x1:.1f}" y="{y + 6}" width="{max(x2 - x1, 2):.1f}" height="{row_h - 12}" rx="3" '
                f'fill="{colour}"><title>{escape(title)}</title></rect>'
            )
            if x2 - x1 > 60:
                body.append(
                    f'<text x="{x1 + 5:.1f}" y="{y + 21}" fill="#fff" font-size="11">{escape(w["label"])}</text>'
                )
    axis_y = top + row_h * len(slots) + 14
    body.append(f'<text x="{left}" y="{axis_y}" fill="#555">{escape(first.strftime("%Y-%m-%d %H:%M"))} UTC</text>')
    end_label = escape(last.strftime("%Y-%m-%d %H:%M"))
    body.append(f'<text x="{left + plot_w}" y="{axis_y}" text-anchor="end" fill="#555">{end_label} UTC</text>')
    for offset, colour, label in ((0, THIS, "this version"), (110, OTHER, "other versions")):
        body.append(f'<rect x="{left + offset}" y="5" width="12" height="12" fill="{colour}"/>')
        body.append(f'<text x="{left + offset + 18}" y="15">{label}</text>')
    return _svg(width, height, body, "Production timeline per application and environment")


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def for_page(svg: str) -> str:
    """A chart for the web pages, whose Content-Security-Policy refuses inline style: without the `style` attribute
    that caps its width in the report (the pages' stylesheet does that)."""
    import re

    return re.sub(r' style="[^"]*"', "", svg, count=1)
