"""A small SVG writer for time plots: line charts and lane charts on one time axis.

Made for `vbms report` (hil/report.py): no dependency, output a few kilobytes per chart, every point
kept where a test can count it.  Styling is left to the page's CSS (classes: title, grid, warn, and the
lane classes the caller names).  Times are seconds; labels are m:ss (h:mm:ss past an hour) from t0.
"""

import html
import math
from collections.abc import Iterable, Sequence

CHART_W, CHART_H, LEFT, RIGHT, TOP, BOTTOM = 320, 140, 46, 12, 24, 22
LANES_W, LANE_H, LANE_LABEL_W = 1000, 18, 110
TICK_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)
MAX_POINTS = 1000  # per line; longer ones keep each bucket's lowest and highest value


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)
    return "%d:%02d" % (seconds // 60, seconds % 60)


def ticks(span_s: float) -> list[int]:
    """Round tick positions within [0, span_s], at most about six."""
    step = next((s for s in TICK_STEPS_S if span_s / s <= 6), TICK_STEPS_S[-1])
    return [i * step for i in range(int(span_s / step) + 1)]


def decimate(points: Sequence[tuple[float, float]], limit: int = MAX_POINTS) -> Sequence[tuple[float, float]]:
    """At most about `limit` points: each bucket keeps its lowest and highest value, in time order."""
    if len(points) <= limit:
        return points
    size = math.ceil(len(points) / (limit // 2))
    kept: list[tuple[float, float]] = []
    for start in range(0, len(points), size):
        bucket = points[start : start + size]
        low = min(bucket, key=lambda point: point[1])
        high = max(bucket, key=lambda point: point[1])
        kept.extend(sorted({low, high}))
    return kept


class Axis:
    """Maps time and values to the chart's pixels."""

    __slots__ = ("t0", "t1", "low", "high", "left", "right")

    def __init__(
        self, t0: float, t1: float, low: float, high: float, left: float = LEFT, right: float = CHART_W - RIGHT
    ) -> None:
        self.t0 = t0
        self.t1 = t1 if t1 > t0 else t0 + 1.0
        if high == low:
            low, high = low - 1.0, high + 1.0
        self.low = low
        self.high = high
        self.left = left
        self.right = right

    def x(self, t_s: float) -> float:
        return self.left + (self.right - self.left) * (t_s - self.t0) / (self.t1 - self.t0)

    def y(self, value: float) -> float:
        return TOP + (CHART_H - TOP - BOTTOM) * (self.high - value) / (self.high - self.low)


def _time_grid(axis: Axis, top: int, bottom: int, label_y: int) -> str:
    parts = []
    for tick in ticks(axis.t1 - axis.t0):
        x = axis.x(axis.t0 + tick)
        parts.append('<line class="grid" x1="%.1f" x2="%.1f" y1="%d" y2="%d"/>' % (x, x, top, bottom))
        parts.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x, label_y, clock(tick)))
    return "".join(parts)


def line_chart(
    points: Sequence[tuple[float, float]],
    t0: float,
    t1: float,
    title: str,
    unit: str,
    digits: int,
    bands: Iterable[tuple[float, float | None, str]] = (),
    series: str = "",
) -> str:
    """(t, value) points over [t0, t1] as an SVG line; bands (start, end or None, tooltip) shaded behind it."""
    shown = decimate(points)
    values = [value for _, value in shown]
    last = ("%.*f %s" % (digits, values[-1], unit)) if values else "no data"
    axis = Axis(t0, t1, min(values, default=0.0), max(values, default=1.0))
    parts = [
        '<svg class="chart" data-series="%s" viewBox="0 0 %d %d" role="img">' % (series, CHART_W, CHART_H),
        '<text class="title" x="4" y="15">%s: %s</text>' % (html.escape(title), html.escape(last)),
    ]
    for start, end, tooltip in bands:
        x0, x1 = axis.x(start), axis.x(t1 if end is None else end)
        parts.append(
            '<rect class="warn" x="%.1f" y="%d" width="%.1f" height="%d"><title>%s</title></rect>'
            % (x0, TOP, max(x1 - x0, 1.0), CHART_H - TOP - BOTTOM, html.escape(tooltip))
        )
    parts.append(_time_grid(axis, TOP, CHART_H - BOTTOM, CHART_H - 6))
    digits = max(digits, min(3, math.ceil(-math.log10((axis.high - axis.low) / 2))))  # three labels that differ
    for value in (axis.low, (axis.low + axis.high) / 2, axis.high):
        y = axis.y(value)
        parts.append('<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>' % (LEFT, CHART_W - RIGHT, y, y))
        parts.append('<text x="%d" y="%.1f" text-anchor="end">%.*f</text>' % (LEFT - 4, y + 4, digits, value))
    if shown:
        parts.append('<polyline points="%s"/>' % " ".join("%.1f,%.1f" % (axis.x(t), axis.y(v)) for t, v in shown))
        if len(shown) == 1:
            parts.append('<circle cx="%.1f" cy="%.1f" r="2.5"/>' % (axis.x(shown[0][0]), axis.y(shown[0][1])))
    parts.append("</svg>")
    return "".join(parts)


def lane_chart(lanes: Sequence[tuple[str, Iterable[tuple[str, float, float, str]]]], t0: float, t1: float) -> str:
    """Lanes [(label, [(css_class, start, end, tooltip)])] on one time axis; a span of no length is a tick."""
    axis = Axis(t0, t1, 0.0, 1.0, LANE_LABEL_W, LANES_W - RIGHT)
    height = TOP + LANE_H * len(lanes) + BOTTOM
    parts = ['<svg class="lanes" viewBox="0 0 %d %d" role="img">' % (LANES_W, height)]
    parts.append(_time_grid(axis, TOP - 4, height - BOTTOM, height - 6))
    for index, (label, spans) in enumerate(lanes):
        y = TOP + index * LANE_H
        parts.append('<text x="4" y="%d">%s</text>' % (y + 13, html.escape(label)))
        for css_class, start, end, tooltip in spans:
            x0 = axis.x(start)
            parts.append(
                '<rect class="%s" x="%.1f" y="%d" width="%.1f" height="12"><title>%s</title></rect>'
                % (css_class, x0, y + 3, max(axis.x(end) - x0, 2.0), html.escape(tooltip))
            )
    parts.append("</svg>")
    return "".join(parts)
