"""Plots as inline SVG drawn on the server: bars, lines and a heat map; no script, nothing external.

Pure functions (labels and numbers in, SVG text out), so they are tested without a server, like
server/web/timeline.py. Every chart:

- is one ``<svg>`` element that parses as XML on its own (the page embeds it as it is);
- has a ``<title>`` and a ``<desc>`` (``aria-labelledby``) for screen readers, and labelled axes;
- escapes every text it is given: unit names are free text and may hold ``<`` or ``&``, and
  characters XML 1.0 cannot carry at all are replaced;
- says so when there is nothing to draw, and never divides by a zero range;
- uses presentation attributes (``fill``, ``stroke``) and classes, not ``style``: the dashboard's
  Content-Security-Policy refuses inline styles.

Values are non-negative (counts, hours, shares, delays): axes start at zero. ``None`` is "no
value" (nothing drawn, a gap in a line); ``0`` is a value (an empty bar, a point on the axis).
The page puts a table with the exact figures under each chart; the SVG only shows them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

#: Okabe-Ito: series stay apart for colour-blind readers too.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#d55e00", "#cc79a7", "#56b4e9", "#f0e442", "#000000")
WIDTH, HEIGHT = 720, 320
LEFT, RIGHT, BOTTOM = 76, 16, 76
LEGEND_ROW = 18
CHAR_W = 7.0  # rough width of one character at the charts' 12 px font, for layout only
MAX_LABEL = 18
HEAT_ROW, HEAT_LEFT = 26, 190

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_IDENT = re.compile(r"[a-z][a-z0-9-]{0,63}")

Format = Callable[[float], str]


def text(value: object) -> str:
    """``value`` as XML text or attribute: escaped, and characters XML 1.0 cannot hold replaced by U+FFFD."""
    return escape(_NOT_XML.sub("\ufffd", str(value)), quote=True)


def number(value: float) -> str:
    """A plain number: integers without decimals, others with at most three."""
    if abs(value - round(value)) < 1e-9:
        return f"{round(value):d}"
    return f"{value:.3f}".rstrip("0").rstrip(".")


def percent(share: float) -> str:
    """A share (0..1) as a percentage with at most one decimal."""
    return f"{share * 100:.1f}".removesuffix(".0") + " %"


def duration_ms(ms: float) -> str:
    """Milliseconds in the largest unit that keeps them readable."""
    if ms < 1000:
        return f"{number(ms)} ms"
    if ms < 120_000:
        return f"{number(round(ms / 1000, 1))} s"
    return f"{number(round(ms / 60_000, 1))} min"


def short(label: str, limit: int = MAX_LABEL) -> str:
    """``label`` cut to ``limit`` characters with an ellipsis (the full text goes in a tooltip)."""
    return label if len(label) <= limit else label[: limit - 1] + "…"


def nice_step(span: float, count: int = 5) -> float:
    """1, 2 or 5 times a power of ten: about ``count`` steps over ``span`` (1 for an empty span)."""
    if not math.isfinite(span) or span <= 0:
        return 1.0
    raw = span / max(1, count)
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if raw <= m * power * (1 + 1e-9):
            return m * power
    return 10 * power  # pragma: no cover - the loop always returns


def ticks(hi: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """Ticks from 0 up to the first one at or above ``hi``; 0..1 when ``hi`` is 0 (all values zero)."""
    if not math.isfinite(hi) or hi <= 0:
        hi = 1.0
    step = nice_step(hi, count)
    if integer:
        step = max(1.0, math.ceil(step))
    n = max(1, math.ceil(hi / step - 1e-9))
    return [round(i * step, 10) for i in range(n + 1)]


@dataclass(frozen=True, slots=True)
class Scale:
    """A linear map of values ``lo``..``hi`` onto pixels ``start``..``end``."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        """The pixel of ``value`` (``start`` for every value when the range is empty)."""
        if self.hi == self.lo:
            return round(self.start, 2)
        return round(self.start + (value - self.lo) * (self.end - self.start) / (self.hi - self.lo), 2)


@dataclass(frozen=True, slots=True)
class Bands:
    """``n`` equal bands over ``start``..``end``, one per category; a share ``padding`` of each is gap."""

    n: int
    start: float
    end: float
    padding: float = 0.25

    @property
    def step(self) -> float:
        """Width of one band, gap included."""
        return (self.end - self.start) / max(1, self.n)

    @property
    def inner(self) -> float:
        """Width of what is drawn in a band."""
        return self.step * (1 - self.padding)

    def left(self, i: int) -> float:
        """Left edge of what is drawn in band ``i``."""
        return round(self.start + i * self.step + self.step * self.padding / 2, 2)

    def center(self, i: int) -> float:
        """Middle of band ``i``."""
        return round(self.start + (i + 0.5) * self.step, 2)


@dataclass(frozen=True, slots=True)
class Series:
    """One named sequence of values, one per category; None where there is no value."""

    name: str
    values: tuple[float | None, ...]


@dataclass(frozen=True, slots=True)
class Chart:
    """What every chart says about itself: id, title, description, axis labels, the no-data text, the format."""

    ident: str
    title: str
    desc: str
    x_label: str
    y_label: str
    empty: str
    fmt: Format = number

    def __post_init__(self) -> None:
        if not _IDENT.fullmatch(self.ident):
            raise ValueError(f"chart id {self.ident!r} must match {_IDENT.pattern}")


# -- the frame every chart shares ---------------------------------------------------------------------------


def _frame(chart: Chart, width: float, height: float, body: str, *, css: str) -> str:
    i = chart.ident
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {css}" id="{i}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" aria-labelledby="{i}-title {i}-desc">'
            f'<title id="{i}-title">{text(chart.title)}</title><desc id="{i}-desc">{text(chart.desc)}</desc>'
            f"{body}</svg>")


def empty_chart(chart: Chart, *, css: str = "empty") -> str:
    """A chart with nothing to draw: its title and description, and the no-data text in the middle."""
    body = (f'<text class="no-data" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" fill="#666">'
            f"{text(chart.empty)}</text>")
    return _frame(chart, WIDTH, HEIGHT, body, css=css)


def _legend(names: Sequence[str], top: float) -> tuple[str, float]:
    """Swatches with names, wrapped to the width; the markup and the height it takes."""
    if len(names) < 2:
        return "", 0.0
    parts, x, y = ['<g class="legend">'], float(LEFT), top
    for j, name in enumerate(names):
        label = short(name, 24)
        w = 16 + CHAR_W * len(label) + 14
        if x + w > WIDTH - RIGHT and x > LEFT:
            x, y = float(LEFT), y + LEGEND_ROW
        parts.append(f'<rect class="swatch s{j % len(PALETTE)}" x="{x}" y="{y}" width="10" height="10" '
                     f'fill="{PALETTE[j % len(PALETTE)]}"/>'
                     f'<text x="{x + 14}" y="{y + 9}" class="legend-label">{text(label)}'
                     f"<title>{text(name)}</title></text>")
        x += w
    parts.append("</g>")
    return "".join(parts), y - top + LEGEND_ROW


def _y_axis(scale: Scale, marks: list[float], fmt: Format, label: str, right: float) -> str:
    parts = ['<g class="y-axis">']
    for t in marks:
        y = scale(t)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{right}" y1="{y}" y2="{y}" stroke="#ddd"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{y + 4}" text-anchor="end">{text(fmt(t))}</text>')
    mid = round((scale.start + scale.end) / 2, 2)
    parts.append(f'<text class="axis-label" transform="rotate(-90)" x="{-mid}" y="14" text-anchor="middle">'
                 f"{text(label)}</text></g>")
    return "".join(parts)


def _x_axis(bands: Bands, categories: Sequence[str], label: str, base: float, height: float) -> str:
    """Category labels (turned when they would not fit side by side, thinned when there are very many)."""
    longest = max((len(short(c)) for c in categories), default=0)
    turned = longest * CHAR_W > bands.step - 4
    every = max(1, math.ceil(len(categories) * 14 / (bands.end - bands.start))) if turned else 1
    parts = [f'<g class="x-axis"><line class="axis" x1="{bands.start}" x2="{bands.end}" y1="{base}" y2="{base}" '
             f'stroke="#333"/>']
    for i, cat in enumerate(categories):
        if i % every:
            continue
        x, y = bands.center(i), base + 14
        turn = f' transform="rotate(-35 {x} {y})" text-anchor="end"' if turned else ' text-anchor="middle"'
        parts.append(f'<text class="category" x="{x}" y="{y}"{turn}>{text(short(cat))}'
                     f"<title>{text(cat)}</title></text>")
    parts.append(f'<text class="axis-label" x="{round((bands.start + bands.end) / 2, 2)}" y="{height - 6}" '
                 f'text-anchor="middle">{text(label)}</text></g>')
    return "".join(parts)


def _value_label(x: float, y: float, label: str, room: float, bar_height: float) -> str:
    """The figure at the top of a bar or a stack when it fits in the bar's width: inside a tall bar
    (clear of a reference line at the top of the axis), else just above it."""
    if CHAR_W * 0.85 * len(label) > room + 6:
        return ""
    inside = bar_height >= 18
    return (f'<text class="value" x="{round(x, 2)}" y="{round(y + 13 if inside else y - 3, 2)}" '
            f'text-anchor="middle" font-size="10" fill="{"#fff" if inside else "#333"}">{text(label)}</text>')


def _check(categories: Sequence[str], series: Sequence[Series]) -> None:
    for s in series:
        if len(s.values) != len(categories):
            raise ValueError(f"series {s.name!r} has {len(s.values)} values for {len(categories)} categories")
        if any(v is not None and (not math.isfinite(v) or v < 0) for v in s.values):
            raise ValueError(f"series {s.name!r} has a negative or non-finite value")


def _has_values(series: Sequence[Series]) -> bool:
    return any(v is not None for s in series for v in s.values)


def _series_frame(categories: Sequence[str], series: Sequence[Series]) -> tuple[str, float, float] | None:
    """Checked inputs' legend and plot top and baseline (px); None when there is nothing to plot."""
    _check(categories, series)
    if not categories or not _has_values(series):
        return None
    legend, legend_h = _legend([s.name for s in series], 10)
    return legend, 14 + legend_h, HEIGHT - BOTTOM


# -- the charts ---------------------------------------------------------------------------------------------


def bar_chart(chart: Chart, categories: Sequence[str], series: Sequence[Series], *, stacked: bool = False,
              y_max: float | None = None, reference: float | None = None, reference_label: str = "",
              integer: bool = False) -> str:
    """Bars per category: one per series side by side, or stacked; an optional dashed reference line.

    ``y_max`` fixes the top of the axis (1 for shares); otherwise it is the nearest tick above the
    largest bar (or stack) and the reference line.
    """
    frame = _series_frame(categories, series)
    if frame is None:
        return empty_chart(chart)
    legend, top, base = frame
    if stacked:
        peak = max(sum(s.values[i] or 0 for s in series) for i in range(len(categories)))
    else:
        peak = max(v or 0 for s in series for v in s.values)
    hi = y_max if y_max is not None else max(peak, reference or 0)
    marks = ticks(hi, integer=integer)
    scale = Scale(0, marks[-1] if y_max is None else y_max, base, top)
    bands = Bands(len(categories), LEFT, WIDTH - RIGHT)
    parts = [legend, _y_axis(scale, marks, chart.fmt, chart.y_label, WIDTH - RIGHT), '<g class="bars">']
    width = bands.inner if stacked else bands.inner / max(1, len(series))
    for i, cat in enumerate(categories):
        below = 0.0
        for j, s in enumerate(series):
            v = s.values[i]
            if v is None:
                continue
            x = bands.left(i) if stacked else round(bands.left(i) + j * width, 2)
            y0, y1 = (below, below + v) if stacked else (0.0, v)
            top_px, base_px = scale(y1), scale(y0)
            parts.append(f'<rect class="bar s{j % len(PALETTE)}" x="{x}" y="{top_px}" width="{round(width, 2)}" '
                         f'height="{round(base_px - top_px, 2)}" fill="{PALETTE[j % len(PALETTE)]}" '
                         f'data-category="{text(cat)}" data-series="{text(s.name)}" data-value="{v}">'
                         f"<title>{text(cat)} · {text(s.name)}: {text(chart.fmt(v))}</title></rect>")
            if not stacked:
                parts.append(_value_label(x + width / 2, top_px, chart.fmt(v), width, base_px - top_px))
            below += v
        if stacked and below > 0:  # the stack's total, above it (a part's colour says nothing about the sum)
            parts.append(_value_label(bands.center(i), scale(below), chart.fmt(below), width, 0))
    parts.append("</g>")
    if reference is not None:
        y = scale(reference)
        parts.append(f'<g class="reference"><line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" '
                     f'stroke="#b71c1c" stroke-width="1.5" stroke-dasharray="6 4"/>'
                     f'<text x="{LEFT + 4}" y="{y - 4}" text-anchor="start" fill="#b71c1c">'
                     f"{text(reference_label or chart.fmt(reference))}</text></g>")
    parts.append(_x_axis(bands, categories, chart.x_label, base, HEIGHT))
    return _frame(chart, WIDTH, HEIGHT, "".join(parts), css="bars-chart")


def line_chart(chart: Chart, categories: Sequence[str], series: Sequence[Series]) -> str:
    """A line per series over the categories (in order); ``None`` breaks the line, each value is a point."""
    frame = _series_frame(categories, series)
    if frame is None:
        return empty_chart(chart)
    legend, top, base = frame
    marks = ticks(max(v or 0 for s in series for v in s.values))
    scale = Scale(0, marks[-1], base, top)
    bands = Bands(len(categories), LEFT, WIDTH - RIGHT)
    parts = [legend, _y_axis(scale, marks, chart.fmt, chart.y_label, WIDTH - RIGHT), '<g class="lines">']
    for j, s in enumerate(series):
        color, css = PALETTE[j % len(PALETTE)], f"s{j % len(PALETTE)}"
        run: list[str] = []
        runs: list[list[str]] = [run]
        for i, v in enumerate(s.values):
            if v is None:
                run = []
                runs.append(run)
                continue
            run.append(f"{bands.center(i)},{scale(v)}")
        for points in runs:
            if len(points) > 1:
                parts.append(f'<polyline class="line {css}" fill="none" stroke="{color}" stroke-width="2" '
                             f'points="{" ".join(points)}"/>')
        for i, v in enumerate(s.values):
            if v is not None:
                parts.append(f'<circle class="point {css}" cx="{bands.center(i)}" cy="{scale(v)}" r="3.5" '
                             f'fill="{color}" data-category="{text(categories[i])}" data-series="{text(s.name)}" '
                             f'data-value="{v}"><title>{text(categories[i])} · {text(s.name)}: '
                             f"{text(chart.fmt(v))}</title></circle>")
    parts.append("</g>")
    parts.append(_x_axis(bands, categories, chart.x_label, base, HEIGHT))
    return _frame(chart, WIDTH, HEIGHT, "".join(parts), css="lines-chart")


def heatmap(chart: Chart, rows: Sequence[str], columns: Sequence[str],
            values: Sequence[Sequence[float | None]], *, hi: float = 1.0, none_label: str = "–") -> str:
    """A cell per (row, column), darker for larger values up to ``hi``; ``None`` cells are grey with ``none_label``."""
    if len(values) != len(rows) or any(len(r) != len(columns) for r in values):
        raise ValueError("a heat map needs one value per row and column")
    if hi <= 0:
        raise ValueError("a heat map's top value must be positive")
    if not rows or not columns or not any(v is not None for r in values for v in r):
        return empty_chart(chart)
    top = 30.0
    height = top + HEAT_ROW * len(rows) + BOTTOM
    bands = Bands(len(columns), HEAT_LEFT, WIDTH - RIGHT, padding=0.06)
    parts = ['<g class="heat-legend">']
    for k, share in enumerate((0.0, 0.25, 0.5, 0.75, 1.0)):
        lx = HEAT_LEFT + k * 70
        parts.append(f'<rect x="{lx}" y="8" width="14" height="12" fill="{PALETTE[0]}" fill-opacity="{share}" '
                     f'stroke="#999" stroke-width="0.5"/><text x="{lx + 18}" y="18">{text(chart.fmt(share * hi))}'
                     f"</text>")
    parts.append("</g><g class=\"cells\">")
    for r, row in enumerate(rows):
        y = top + r * HEAT_ROW
        parts.append(f'<text class="row-label" x="{HEAT_LEFT - 6}" y="{y + HEAT_ROW / 2 + 4}" text-anchor="end">'
                     f"{text(short(row, 20))}<title>{text(row)}</title></text>")
        for c, col in enumerate(columns):
            v = values[r][c]
            x, w = bands.left(c), round(bands.inner, 2)
            if v is None:
                fill, label = 'fill="#eeeeee"', none_label
            else:
                if not math.isfinite(v) or v < 0:
                    raise ValueError(f"negative or non-finite value at {row!r}, {col!r}")
                fill, label = f'fill="{PALETTE[0]}" fill-opacity="{round(min(v / hi, 1.0), 3)}"', chart.fmt(v)
            parts.append(f'<rect class="cell{" none" if v is None else ""}" x="{x}" y="{y + 2}" width="{w}" '
                         f'height="{HEAT_ROW - 4}" {fill} stroke="#ccc" stroke-width="0.5" data-row="{text(row)}" '
                         f'data-column="{text(col)}" data-value="{"" if v is None else v}">'
                         f"<title>{text(row)} · {text(col)}: {text(label)}</title></rect>")
            if w >= CHAR_W * len(label) + 4:
                ink = "#fff" if v is not None and v / hi > 0.55 else "#222"
                parts.append(f'<text class="cell-label" x="{bands.center(c)}" y="{y + HEAT_ROW / 2 + 4}" '
                             f'text-anchor="middle" fill="{ink}">{text(label)}</text>')
    parts.append("</g>")
    parts.append(f'<text class="axis-label" transform="rotate(-90)" x="{-(top + HEAT_ROW * len(rows) / 2)}" '
                 f'y="14" text-anchor="middle">{text(chart.y_label)}</text>')
    parts.append(_x_axis(bands, columns, chart.x_label, top + HEAT_ROW * len(rows) + 2, height))
    return _frame(chart, WIDTH, height, "".join(parts), css="heatmap")
