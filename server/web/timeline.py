"""The coverage timeline of a case as SVG: each step's window against what was recorded, gaps in red.

Pure functions (intervals in, SVG text out), so they are tested without a server. Intervals are
half-open ``(start_ms, end_ms)`` on the device clocks, as the entries carry them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

Interval = tuple[int, int]

#: Holes shorter than this between consecutive chunks are encoder rounding, not gaps.
DEFAULT_TOLERANCE_MS = 1000
WIDTH, LABEL_W, ROW_H, TOP = 960, 200, 28, 24


def merge(intervals: list[Interval], tolerance_ms: int = 0) -> list[Interval]:
    """Union of intervals, joining those closer than ``tolerance_ms``."""
    out: list[Interval] = []
    for lo, hi in sorted(i for i in intervals if i[0] < i[1]):
        if out and lo <= out[-1][1] + tolerance_ms:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def gaps(window: Interval, covered: list[Interval], tolerance_ms: int = DEFAULT_TOLERANCE_MS) -> list[Interval]:
    """The parts of ``window`` not covered, longer than ``tolerance_ms``."""
    w0, w1 = window
    out, cursor = [], w0
    for lo, hi in merge([(max(lo, w0), min(hi, w1)) for lo, hi in covered], tolerance_ms):
        if lo > cursor:
            out.append((cursor, lo))
        cursor = max(cursor, hi)
    if cursor < w1:
        out.append((cursor, w1))
    return [g for g in out if g[1] - g[0] > tolerance_ms]


@dataclass(frozen=True, slots=True)
class Row:
    """One step on the timeline."""

    step_id: str
    label: str
    window: Interval | None
    recorded: list[Interval]

    def gaps(self, tolerance_ms: int = DEFAULT_TOLERANCE_MS) -> list[Interval]:
        """Uncovered parts of the window."""
        return gaps(self.window, self.recorded, tolerance_ms) if self.window else []

    def coverage(self, tolerance_ms: int = DEFAULT_TOLERANCE_MS) -> float | None:
        """Share of the window recorded (None without a window)."""
        if self.window is None or self.window[1] <= self.window[0]:
            return None
        missing = sum(hi - lo for lo, hi in self.gaps(tolerance_ms))
        return 1 - missing / (self.window[1] - self.window[0])


def _clock(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


def timeline_svg(rows: list[Row], *, title: str, tolerance_ms: int = DEFAULT_TOLERANCE_MS) -> str:
    """The SVG: a row per step; grey window, green recorded spans, red gaps (class ``gap``)."""
    spans = [r.window for r in rows if r.window] + [i for r in rows for i in r.recorded]
    height = TOP + ROW_H * max(1, len(rows)) + 20
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" viewBox="0 0 {WIDTH} {height}" '
            f'width="{WIDTH}" height="{height}" role="img" aria-label="{escape(title)}">')
    if not spans:
        return head + "</svg>"
    t0, t1 = min(s[0] for s in spans), max(s[1] for s in spans)
    t1 = max(t1, t0 + 1)
    scale = (WIDTH - LABEL_W - 10) / (t1 - t0)

    def x(ms: int) -> float:
        return round(LABEL_W + (ms - t0) * scale, 2)

    parts = [head, f'<text x="{LABEL_W}" y="14" class="axis">{_clock(t0)} UTC</text>',
             f'<text x="{WIDTH - 10}" y="14" class="axis" text-anchor="end">{_clock(t1)} UTC</text>']
    for i, row in enumerate(rows):
        y = TOP + i * ROW_H
        parts.append(f'<g class="step" data-step="{escape(row.step_id)}">')
        parts.append(f'<text x="4" y="{y + 18}" class="label">{escape(row.label[:28])}</text>')
        if row.window:
            w0, w1 = row.window
            parts.append(f'<rect class="window" x="{x(w0)}" y="{y + 4}" width="{max(1.0, x(w1) - x(w0))}" '
                         f'height="{ROW_H - 8}" fill="#d9d9d9"><title>{_clock(w0)}–{_clock(w1)}</title></rect>')
        for lo, hi in merge(row.recorded, tolerance_ms):  # holes under the tolerance are not gaps either
            parts.append(f'<rect class="recorded" x="{x(lo)}" y="{y + 8}" width="{max(1.0, x(hi) - x(lo))}" '
                         f'height="{ROW_H - 16}" fill="#2e7d32"><title>{_clock(lo)}–{_clock(hi)}</title></rect>')
        for lo, hi in row.gaps(tolerance_ms):
            parts.append(f'<rect class="gap" x="{x(lo)}" y="{y + 4}" width="{max(1.0, x(hi) - x(lo))}" '
                         f'height="{ROW_H - 8}" fill="#d32f2f" fill-opacity="0.85" data-from="{lo}" data-to="{hi}">'
                         f'<title>{_clock(lo)}–{_clock(hi)} ({(hi - lo) / 1000:.1f} s)</title></rect>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
