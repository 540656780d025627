"""The statistics page's pure parts: month ranges from the query, and the report shaped into figures."""

from __future__ import annotations

import pytest

from server.errors import BadRequest
from server.web.stats_view import MonthRange, by_month, finding_codes, parse_month, per_key, uptime_grid

JAN_2026 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def row(key: str, month: str, **kw: object) -> dict[str, object]:
    base: dict[str, object] = {"key": key, "month": month, "recordings": 0, "steps_required": 0, "steps_covered": 0,
                               "findings": {}, "uptime_share": None}
    base.update(kw)
    return base


def test_month_ranges() -> None:
    default = MonthRange.of(None, None, JAN_2026 + 5 * 86_400_000)
    assert default.months()[0] == "2025-02" and default.months()[-1] == "2026-01" and len(default.months()) == 12
    span = MonthRange.of("2025-11", "2026-02", 0)
    assert span.months() == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert span.since_ms == JAN_2026 - 61 * 86_400_000 and span.until_ms == JAN_2026 + 59 * 86_400_000
    assert span.years == [2025, 2026]
    assert MonthRange.of("2000-01", "2000-03", 0).months() == ["2000-01", "2000-02", "2000-03"]
    assert MonthRange.of(None, "2000-03", 0).first == (2000, 1)  # the default start never precedes 2000
    # The end of 2099 is the last the stats API takes: the page's links stay valid.
    assert MonthRange.of("2099-12", "2099-12", 0).until_ms == 4_102_444_799_999


@pytest.mark.parametrize(("first", "last", "code"), [
    ("2026-13", None, "bad_month"), ("2026-00", None, "bad_month"), ("1999-12", None, "bad_month"),
    ("2026-1", None, "bad_month"), ("2026-01-01", None, "bad_month"), ("２０２６-01", None, "bad_month"),
    (None, "2100-01", "bad_month"), ("2026-02", "2026-01", "bad_range"), ("2000-01", "2010-01", "bad_range"),
])
def test_bad_months_are_refused_with_a_code(first: str | None, last: str | None, code: str) -> None:
    with pytest.raises(BadRequest) as exc:
        MonthRange.of(first, last, JAN_2026)
    assert exc.value.code == code


def test_parse_month() -> None:
    assert parse_month("from", "2026-07") == (2026, 7)


def test_figures_per_key_and_month() -> None:
    rows = [row("east", "2026-01", steps_required=3, steps_covered=2, findings={"chain.gap": 1}),
            row("east", "2026-02", steps_required=1, steps_covered=1, findings={"chain.gap": 2, "a.b": 1}),
            row("west", "2026-01"),
            row("dev", "2026-01", uptime_share=0.5), row("dev", "2026-03", uptime_share=0.0)]
    dev, east, west = per_key(rows)
    assert (east.key, east.steps_required, east.steps_covered, east.covered_share) == ("east", 4, 3, 0.75)
    assert east.findings == {"a.b": 1, "chain.gap": 3}
    assert west.covered_share is None and dev.covered_share is None  # no steps: no share, no division by zero
    assert finding_codes(rows) == ["a.b", "chain.gap"]
    totals = [{"month": "2026-01", "recordings": 3}]
    assert by_month(totals, ["2025-12", "2026-01"]) == [None, totals[0]]
    keys, grid = uptime_grid(rows, ["2026-01", "2026-02", "2026-03"])
    assert keys == ["dev", "east", "west"]
    assert grid[0] == [0.5, None, 0.0]  # a month without a row is no value; a zero is a zero
