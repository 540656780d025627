"""The statistics page's figures: the stats report shaped for its charts and tables.

Pure (the report of :meth:`server.services.stats.StatsService.report` in, figures out), so the
shaping is tested without a server. Every figure is the report's own (a month's total) or a sum
of its rows (a key over the months shown); nothing is estimated, so a reader can check the page
against ``GET /api/v1/stats`` with the same ``since`` and ``until``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from server.api.governance_api import STATS_QUERY
from server.errors import BadRequest

_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")  # ASCII digits: \d would take "２０２６" too
#: Ten years of months on one page; more would be an unreadable chart and a long query.
MAX_MONTHS = 120
_UNTIL_MAX = STATS_QUERY["until"].hi or 0


def parse_month(name: str, value: str) -> tuple[int, int]:
    """``YYYY-MM`` (2000-01 to 2099-12) as (year, month); :class:`BadRequest` ``bad_month`` otherwise."""
    m = _MONTH.fullmatch(value)
    if m is None or not 2000 <= int(m[1]) <= 2099 or not 1 <= int(m[2]) <= 12:
        raise BadRequest(f"{name} must be a month written YYYY-MM, from 2000-01 to 2099-12", code="bad_month",
                         field=name)
    return int(m[1]), int(m[2])


def _ms(year: int, month: int) -> int:
    """First millisecond of a month (UTC); month 13 is January of the next year."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return int(dt.datetime(year, month, 1, tzinfo=dt.UTC).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class MonthRange:
    """The months a page shows, first and last included (UTC calendar months, as the report counts)."""

    first: tuple[int, int]
    last: tuple[int, int]

    @classmethod
    def of(cls, first: str | None, last: str | None, now_ms: int) -> MonthRange:
        """The range a query asks for; by default the twelve months up to the current one."""
        now = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC)
        end = parse_month("to", last) if last else (now.year, now.month)
        if first:
            start = parse_month("from", first)
        else:
            index = end[0] * 12 + end[1] - 1 - 11
            start = max((index // 12, index % 12 + 1), (2000, 1))
        span = (end[0] * 12 + end[1]) - (start[0] * 12 + start[1]) + 1
        if span < 1:
            raise BadRequest("from must not be after to", code="bad_range", field="from")
        if span > MAX_MONTHS:
            raise BadRequest(f"at most {MAX_MONTHS} months at once", code="bad_range", field="from")
        return cls(start, end)

    def months(self) -> list[str]:
        """Every month of the range as ``YYYY-MM``, in order."""
        (y, m), out = self.first, []
        while (y, m) <= self.last:
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out

    @property
    def since_ms(self) -> int:
        """Start of the first month."""
        return _ms(*self.first)

    @property
    def until_ms(self) -> int:
        """End of the last month (exclusive), within what the stats API accepts (it ends with 2099)."""
        return min(_ms(self.last[0], self.last[1] + 1), _UNTIL_MAX)

    @property
    def years(self) -> list[int]:
        """The calendar years the range touches (for the yearly public summary links)."""
        return list(range(self.first[0], self.last[0] + 1))


@dataclass(frozen=True, slots=True)
class KeyFigures:
    """One key (unit, officer or device) summed over the months shown."""

    key: str
    steps_required: int
    steps_covered: int
    findings: dict[str, int]

    @property
    def covered_share(self) -> float | None:
        """Steps with footage over steps requiring it, rounded as the report rounds; None without such steps."""
        return round(self.steps_covered / self.steps_required, 4) if self.steps_required else None


def per_key(rows: Sequence[Mapping[str, Any]]) -> list[KeyFigures]:
    """The rows summed per key: steps and findings fall in one month each, so each counts once.

    Recordings are left out: one running over the turn of a month is in both months' rows.
    """
    acc: dict[str, dict[str, Any]] = {}
    for r in rows:
        k = acc.setdefault(r["key"], {"steps_required": 0, "steps_covered": 0, "findings": defaultdict(int)})
        k["steps_required"] += r["steps_required"]
        k["steps_covered"] += r["steps_covered"]
        for code, n in r["findings"].items():
            k["findings"][code] += n
    return [KeyFigures(key, a["steps_required"], a["steps_covered"], dict(sorted(a["findings"].items())))
            for key, a in sorted(acc.items())]


def finding_codes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every finding code in the rows, sorted."""
    return sorted({code for r in rows for code in r["findings"]})


def by_month(totals: Sequence[Mapping[str, Any]], months: Sequence[str]) -> list[Mapping[str, Any] | None]:
    """Each month's total, None for a month the report has nothing in (nothing happened then)."""
    found = {t["month"]: t for t in totals}
    return [found.get(m) for m in months]


def uptime_grid(rows: Sequence[Mapping[str, Any]], months: Sequence[str]) -> tuple[list[str], list[list[float | None]]]:
    """Device keys and their uptime per month (None where the device has no row that month)."""
    found = {(r["key"], r["month"]): r["uptime_share"] for r in rows}
    keys = sorted({r["key"] for r in rows})
    return keys, [[found.get((k, m)) for m in months] for k in keys]
