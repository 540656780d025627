"""Statistics on the records (全过程记录数据统计分析): per unit, officer, device and month.

For each (dimension, key, month): recordings, hours recorded, steps requiring recording and the
share of them with footage linked, findings by code, upload delay percentiles, and the device's
uptime (the share of the month's hours in which the server heard from it: entries or statuses;
there is no availability history to do better). Months are UTC calendar months of the device's
chunk time (recordings), the step's start (steps) and the server's time (findings, uploads).

The yearly public summary keeps only aggregates per unit and for the whole agency: no officer,
no device, no case number, no party.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from custody.clock import Clock
from server.db.database import Database
from server.db.schema import case_steps, cases, devices, entries, findings, officers, step_links, units
from server.services.units import Scope

DIMENSIONS = ("unit", "officer", "device")
HOUR_MS = 3_600_000
CSV_COLUMNS = ("dimension", "key", "month", "recordings", "hours", "steps_required", "steps_covered",
               "covered_share", "findings", "upload_delay_p50_ms", "upload_delay_p90_ms", "upload_delay_p99_ms",
               "uptime_share")


def month_of(ms: int) -> str:
    """``YYYY-MM`` (UTC) of a time in ms."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m")


def hours_in_month(month: str) -> int:
    """Hours in a ``YYYY-MM`` month."""
    year, mon = (int(x) for x in month.split("-"))
    start = dt.datetime(year, mon, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=dt.UTC)
    return int((end - start).total_seconds() // 3600)


def percentile(values: list[int], q: float) -> int | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


class _Cell:
    """What one (key, month) counts; cells of several keys merge into the month's total."""

    __slots__ = ("delays", "findings", "heard_hours", "ms", "recordings", "steps_covered", "steps_required")

    def __init__(self) -> None:
        self.recordings: set[tuple[str, str]] = set()
        self.ms = 0
        # Step ids, not counts: a step of two officers is one step in the month's total.
        self.steps_required: set[str] = set()
        self.steps_covered: set[str] = set()
        self.findings: dict[str, int] = defaultdict(int)
        self.delays: list[int] = []
        self.heard_hours: set[int] = set()

    def merge(self, other: _Cell) -> None:
        """Add ``other`` (a cell of another key, same month) to this one."""
        self.recordings |= other.recordings
        self.ms += other.ms
        self.steps_required |= other.steps_required
        self.steps_covered |= other.steps_covered
        for code, n in other.findings.items():
            self.findings[code] += n
        self.delays.extend(other.delays)
        self.heard_hours |= other.heard_hours

    def to_json(self, dimension: str, key: str | None, month: str) -> dict[str, Any]:
        required, covered = len(self.steps_required), len(self.steps_covered)
        share = None if not required else round(covered / required, 4)
        # Uptime is a device's own; a total over devices would be a share of nothing in particular.
        uptime = (round(len(self.heard_hours) / hours_in_month(month), 4)
                  if dimension == "device" and key is not None else None)
        return {"dimension": dimension, "key": key, "month": month, "recordings": len(self.recordings),
                "hours": round(self.ms / HOUR_MS, 3), "steps_required": required,
                "steps_covered": covered, "covered_share": share,
                "findings": dict(sorted(self.findings.items())),
                "upload_delay_ms": {"p50": percentile(self.delays, 50), "p90": percentile(self.delays, 90),
                                    "p99": percentile(self.delays, 99), "count": len(self.delays)},
                "uptime_share": uptime}


class StatsService:
    """Monthly statistics and the yearly public summary."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def monthly(self, since_ms: int, until_ms: int, dimension: str,
                      scope: Scope | None = None) -> list[dict[str, Any]]:
        """Rows of ``dimension`` (unit, officer or device) by month, in the caller's scope."""
        return (await self.report(since_ms, until_ms, dimension, scope))["rows"]

    async def report(self, since_ms: int, until_ms: int, dimension: str,
                     scope: Scope | None = None) -> dict[str, list[dict[str, Any]]]:
        """``rows`` of ``dimension`` by month and each month's ``totals`` over those rows' keys, in the scope.

        A total is not the sum of its rows: a recording or a step shared by two keys (two officers
        of one step) counts once, and its percentiles are taken over all the month's uploads.
        """
        cells: dict[tuple[str, str], _Cell] = defaultdict(_Cell)
        async with self.db.read() as conn:
            dev_unit = {r.id: r.unit_id for r in (await conn.execute(sa.select(devices.c.id, devices.c.unit_id)))}
            off_unit = {r.id: r.unit_id for r in (await conn.execute(sa.select(officers.c.id, officers.c.unit_id)))}
            chunks = (await conn.execute(sa.select(
                entries.c.device_id, entries.c.recording_id, entries.c.officer_id, entries.c.time_ms,
                entries.c.duration_ms, entries.c.received_ms, entries.c.verified_ms, entries.c.kind)
                .where(entries.c.received_ms >= since_ms, entries.c.received_ms < until_ms))).all()
            steps = (await conn.execute(sa.select(
                case_steps.c.id, case_steps.c.officers, case_steps.c.requirement, case_steps.c.status,
                case_steps.c.planned_start_ms, case_steps.c.actual_start_ms, case_steps.c.created_ms, cases.c.unit_id)
                .join(cases, cases.c.id == case_steps.c.case_id))).all()
            linked = set((await conn.execute(sa.select(step_links.c.step_id)
                                             .where(step_links.c.removed_ms.is_(None)))).scalars().all())
            found = (await conn.execute(sa.select(findings.c.code, findings.c.device_id, findings.c.opened_ms)
                                        .where(findings.c.opened_ms >= since_ms,
                                               findings.c.opened_ms < until_ms))).all()

        def keys(device_id: str | None, officer_id: str | None) -> list[str]:
            if dimension == "device":
                return [device_id] if device_id else []
            if dimension == "officer":
                return [officer_id] if officer_id else []
            unit = dev_unit.get(device_id) if device_id else None
            unit = unit or (off_unit.get(officer_id) if officer_id else None)
            return [unit or "(none)"]

        for c in chunks:
            for key in keys(c.device_id, c.officer_id):
                if c.kind == "chunk":
                    cell = cells[(key, month_of(c.time_ms))]
                    cell.recordings.add((c.device_id, c.recording_id))
                    cell.ms += c.duration_ms or 0
                    if c.verified_ms is not None:
                        # Upload delay: from the chunk's end on the device to its verification on the server.
                        cells[(key, month_of(c.received_ms))].delays.append(
                            max(0, c.verified_ms - (c.time_ms + (c.duration_ms or 0))))
                cells[(key, month_of(c.received_ms))].heard_hours.add(c.received_ms // HOUR_MS)
        for s in steps:
            if s.requirement == "none" or s.status == "cancelled":
                continue
            start = s.actual_start_ms or s.planned_start_ms or s.created_ms
            if not since_ms <= start < until_ms:
                continue
            if dimension == "device":
                continue  # steps belong to officers and units, not to devices
            step_keys = ([o for o in s.officers] if dimension == "officer" else [s.unit_id or "(none)"])
            for key in step_keys:
                cell = cells[(key, month_of(start))]
                cell.steps_required.add(s.id)
                if s.id in linked:
                    cell.steps_covered.add(s.id)
        for f in found:
            for key in keys(f.device_id, None):
                cells[(key, month_of(f.opened_ms))].findings[f.code] += 1
        visible = None if scope is None or scope.everywhere else await self._visible(dimension, scope)
        shown = sorted(((km, cell) for km, cell in cells.items() if visible is None or km[0] in visible),
                       key=lambda item: item[0])
        totals: dict[str, _Cell] = defaultdict(_Cell)
        for (_key, month), cell in shown:
            totals[month].merge(cell)
        return {"rows": [cell.to_json(dimension, key, month) for (key, month), cell in shown],
                "totals": [totals[month].to_json(dimension, None, month) for month in sorted(totals)]}

    async def _visible(self, dimension: str, scope: Scope) -> set[str]:
        table = {"unit": units, "officer": officers, "device": devices}[dimension]
        col = table.c.id if dimension == "unit" else table.c.unit_id
        async with self.db.read() as conn:
            return set((await conn.execute(sa.select(table.c.id).where(scope.where(col)))).scalars().all())

    async def public_summary(self, year: int) -> dict[str, Any]:
        """The yearly public summary: aggregates per unit and agency-wide, no personal data."""
        since = int(dt.datetime(year, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
        until = int(dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
        rows = await self.monthly(since, until, "unit")
        async with self.db.read() as conn:
            names = {r.id: r.name for r in (await conn.execute(sa.select(units.c.id, units.c.name)))}
        per_unit: dict[str, dict[str, Any]] = {}
        total = {"recordings": 0, "hours": 0.0, "steps_required": 0, "steps_covered": 0}
        total_findings: dict[str, int] = defaultdict(int)
        for r in rows:
            u = per_unit.setdefault(r["key"], {"unit": names.get(r["key"], "(not in a unit)"), "recordings": 0,
                                               "hours": 0.0, "steps_required": 0, "steps_covered": 0,
                                               "findings": defaultdict(int)})
            for k in ("recordings", "hours", "steps_required", "steps_covered"):
                u[k] += r[k]
                total[k] += r[k]
            for code, n in r["findings"].items():
                u["findings"][code] += n
                total_findings[code] += n

        def finish(d: dict[str, Any], found: dict[str, int]) -> dict[str, Any]:
            d["hours"] = round(d["hours"], 1)
            d["covered_share"] = round(d["steps_covered"] / d["steps_required"], 4) if d["steps_required"] else None
            d["findings"] = dict(sorted(found.items()))
            return d

        return {"title": f"Enforcement recording: public summary {year}",
                "title_zh": f"执法全过程记录 {year} 年度公开统计",
                "year": year, "generated_ms": self.clock.now_ms(),
                "notes": "Aggregates only: no officer, device, case or party is named.",
                "agency": finish(dict(total), total_findings),
                "units": [finish(u, u["findings"]) for _, u in sorted(per_unit.items())]}


def to_csv(rows: list[dict[str, Any]]) -> str:
    """The monthly rows as CSV (findings as ``code=n;code=n``)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        d = r["upload_delay_ms"]
        w.writerow([r["dimension"], r["key"], r["month"], r["recordings"], r["hours"], r["steps_required"],
                    r["steps_covered"], "" if r["covered_share"] is None else r["covered_share"],
                    ";".join(f"{k}={v}" for k, v in r["findings"].items()),
                    *("" if d[p] is None else d[p] for p in ("p50", "p90", "p99")),
                    "" if r["uptime_share"] is None else r["uptime_share"]])
    return out.getvalue()
