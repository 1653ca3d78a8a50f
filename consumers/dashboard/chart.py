"""Charts as inline SVG, rendered on the server: no chart library, no build step.

Pure functions from numbers to markup. Every label is escaped; each series is a
``<polyline>`` (or bars) with a class naming its role (``series-canary``,
``series-baseline``), so the page styles them and tests can find them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 560
HEIGHT = 220
PAD_LEFT = 56
PAD_RIGHT = 12
PAD_TOP = 30
PAD_BOTTOM = 30


@dataclass(frozen=True)
class Series:
    name: str
    #: CSS class suffix: ``series-<role>``
    role: str
    points: tuple[tuple[float, float], ...]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 0.01:
        return f"{value:.2e}"
    return f"{value:.3g}"


def _finite(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]


def line_chart(
    title: str,
    series: Sequence[Series],
    *,
    x_label: str = "",
    threshold: float | None = None,
) -> str:
    """A line chart of ``series`` over a shared x axis, with an optional threshold."""
    clean = [Series(s.name, s.role, tuple(_finite(s.points))) for s in series]
    xs = [x for s in clean for x, _ in s.points]
    ys = [y for s in clean for _, y in s.points]
    if threshold is not None and math.isfinite(threshold):
        ys.append(threshold)
    label = escape(title)
    if not xs:
        return (
            f'<svg class="chart" viewBox="0 0 {WIDTH} 40" role="img" aria-label="{label}">'
            f'<text x="8" y="24" class="chart-empty">{label}: no data</text></svg>'
        )
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(ys)), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y1 = y0 + 1
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def px(x: float) -> float:
        return PAD_LEFT + (x - x0) / (x1 - x0) * inner_w

    def py(y: float) -> float:
        return PAD_TOP + inner_h - (y - y0) / (y1 - y0) * inner_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{label}">',
        f"<title>{label}</title>",
        f'<text class="chart-title" x="8" y="16">{label}</text>',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP + inner_h}" x2="{WIDTH - PAD_RIGHT}"'
        f' y2="{PAD_TOP + inner_h}"/>',
        f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{PAD_TOP + inner_h}"/>',
    ]
    for tick in (y0, (y0 + y1) / 2, y1):
        y = py(tick) + 4
        parts.append(
            f'<text class="tick" x="{PAD_LEFT - 4}" y="{y:.1f}" text-anchor="end">{_fmt(tick)}</text>'
        )
    if x_label:
        parts.append(
            f'<text class="tick" x="{PAD_LEFT + inner_w / 2:.1f}" y="{HEIGHT - 6}"'
            f' text-anchor="middle">{escape(x_label)}</text>'
        )
    if threshold is not None and math.isfinite(threshold):
        y = py(threshold)
        parts.append(
            f'<line class="threshold" x1="{PAD_LEFT}" y1="{y:.1f}" x2="{WIDTH - PAD_RIGHT}" y2="{y:.1f}">'
            f"<title>threshold {_fmt(threshold)}</title></line>"
        )
    for s in clean:
        if not s.points:
            continue
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
        role = escape(s.role)
        parts.append(
            f'<polyline class="series series-{role}" data-series="{escape(s.name)}" points="{coords}">'
            f"<title>{escape(s.name)}</title></polyline>"
        )
        for x, y in s.points:
            parts.append(
                f'<circle class="dot series-{role}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="3">'
                f"<title>{escape(s.name)}: {_fmt(y)}</title></circle>"
            )
    legend_x = PAD_LEFT + 8
    for i, s in enumerate(clean):
        y = PAD_TOP + 10 + i * 14
        parts.append(
            f'<rect class="legend series-{escape(s.role)}" x="{legend_x}" y="{y - 8}"'
            ' width="10" height="10"/>'
            f'<text class="legend-label" x="{legend_x + 14}" y="{y + 1}">{escape(s.name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(
    title: str,
    bars: Sequence[tuple[str, float | None]],
    *,
    unit: str = "",
    fmt: Callable[[float], str] = _fmt,
) -> str:
    """Horizontal bars, one per label (None: no value, drawn as a dash); ``fmt``
    writes each value."""
    label = escape(title)
    row_h = 22
    height = PAD_TOP + row_h * max(len(bars), 1) + 8
    label_w = 170
    inner_w = WIDTH - label_w - 70
    values = [v for _, v in bars if v is not None and math.isfinite(v)]
    top = max(values) if values else 1.0
    top = top or 1.0
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{label}">']
    parts.append(f'<title>{label}</title><text class="chart-title" x="8" y="16">{label}</text>')
    if not bars:
        parts.append(f'<text x="8" y="24" class="chart-empty">{label}: no data</text>')
    for i, (name, value) in enumerate(bars):
        y = PAD_TOP + i * row_h
        parts.append(
            f'<text class="tick" x="{label_w - 6}" y="{y + 14}" text-anchor="end">{escape(name)}</text>'
        )
        if value is None or not math.isfinite(value):
            parts.append(f'<text class="tick" x="{label_w + 4}" y="{y + 14}">-</text>')
            continue
        w = max(1.0, value / top * inner_w)
        shown = escape(fmt(value) + unit)
        parts.append(
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}">'
            f"<title>{escape(name)}: {shown}</title></rect>"
            f'<text class="tick" x="{label_w + w + 4:.1f}" y="{y + 14}">{shown}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
