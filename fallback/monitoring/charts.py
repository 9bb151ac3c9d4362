"""Charts drawn on the server as inline SVG: no CDN, no JavaScript library,
readable on a counter PC with no Internet access. Colours and sizes are SVG
presentation attributes, not `style`, so the strict Content-Security-Policy
stays as it is.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

OK_COLOUR, FAILED_COLOUR, EMPTY_COLOUR = "#0b5d1e", "#b00020", "#e5e5e5"
SERIES_COLOURS = ("#0047ab", "#8a5a00", "#5b2a86", "#0b5d1e")


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[dt.datetime, float | None]]  # None breaks the line (no data)


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 × 10^n at or above value (an axis step)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(step * magnitude for step in (1, 2, 5, 10) if step * magnitude >= value)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:g}"


def line_chart(series: Sequence[Series], *, start: dt.datetime, end: dt.datetime, unit: str, title: str,
               width: int = 900, height: int = 260) -> Markup:
    """Lines over time with a day grid (labelled M/D) and a value axis."""
    left, right, top, bottom = 70, 20, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for s in series for _, v in s.points if v is not None]
    y_step = _nice_ceiling((max(values) * 1.05 if values else 1.0) / 4)
    y_max = y_step * 4
    span = (end - start).total_seconds() or 1.0

    def x(moment: dt.datetime) -> float:
        return left + plot_w * (moment - start).total_seconds() / span

    def y(value: float) -> float:
        return top + plot_h * (1 - value / y_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>',
    ]
    for step in range(5):
        value = y_step * step
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(value) + 5:.1f}" text-anchor="end" font-size="13">{_number(value)}</text>')
    parts.append(f'<text x="{left - 6}" y="{top - 10}" text-anchor="end" font-size="13">{escape(unit)}</text>')
    day = start.replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
    while day < end:
        parts.append(f'<line x1="{x(day):.1f}" x2="{x(day):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#ddd"/>')
        parts.append(f'<text x="{x(day):.1f}" y="{top + plot_h + 18}" text-anchor="middle" font-size="13">{day.month}/{day.day}</text>')
        day += dt.timedelta(days=1)
    for index, s in enumerate(series):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        run: list[str] = []
        for moment, value in list(s.points) + [(end, None)]:
            if value is None:
                if len(run) > 1:
                    parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(run)}"/>')
                elif run:
                    cx, cy = run[0].split(",")
                    parts.append(f'<circle cx="{cx}" cy="{cy}" r="2" fill="{colour}"/>')
                run = []
            else:
                run.append(f"{x(moment):.1f},{y(value):.1f}")
        legend_x = left + 10 + index * 220
        parts.append(f'<rect x="{legend_x}" y="{top - 22}" width="14" height="4" fill="{colour}"/>')
        parts.append(f'<text x="{legend_x + 20}" y="{top - 16}" font-size="13">{escape(s.label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def probe_strip(samples: Sequence[tuple[dt.datetime, bool]], *, start: dt.datetime, end: dt.datetime, interval_s: float,
                label: str, width: int = 600, height: int = 22) -> Markup:
    """One cell per probe, green when it answered and red when not; blank
    where there was no probe."""
    span = (end - start).total_seconds() or 1.0
    cell = max(1.5, width * interval_s / span)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="{EMPTY_COLOUR}"/>',
    ]
    for moment, ok in samples:
        position = width * (moment - start).total_seconds() / span
        parts.append(f'<rect x="{position:.1f}" y="0" width="{cell:.1f}" height="{height}" fill="{OK_COLOUR if ok else FAILED_COLOUR}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))
