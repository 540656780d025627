"""Bodies and thin handlers of the governance endpoints: units and placements, legal holds and
retention, statistics.

The routes are rows of the one route table in server/api/routes.py; this module keeps their
declarations and handlers out of that shared file.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.api.body import Body, F
from server.services.units import PARENT_KIND, UNIT_ID, UNIT_TABLES

if TYPE_CHECKING:
    from server.api.routes import Ctx

UNIT = F("string", "unit id", pattern=UNIT_ID.pattern, max_len=64)

UNIT_ADD = Body("UnitAdd", {
    "id": UNIT,
    "name": F("string", "name of the unit", max_len=200),
    "kind": F("string", "bureau (top), section (under a bureau) or team (under a section)", enum=tuple(PARENT_KIND)),
    "parent_id": F("string", "parent unit (none for a bureau)", required=False, nullable=True,
                   pattern=UNIT_ID.pattern, max_len=64),
})
PLACEMENT = Body("Placement", {
    "kind": F("string", "what to place", enum=tuple(UNIT_TABLES)),
    "id": F("string", "its id (a case's number id as a string, a user's name)", max_len=64),
    "unit_id": F("string", "the unit it belongs to (null: none, agency-wide)", nullable=True,
                 pattern=UNIT_ID.pattern, max_len=64),
    "scope_unit_id": F("string", "users only: root of a wider scope granted to them", required=False,
                       nullable=True, pattern=UNIT_ID.pattern, max_len=64),
})


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data, ensure_ascii=False).encode("utf-8"),
                        content_type="application/json", charset="utf-8")


async def units_list(ctx: Ctx) -> web.StreamResponse:
    """The units in the caller's scope, parents first."""
    units = ctx.services.units
    return _ok({"units": await units.list_units(await units.scope(ctx.principal))})


async def units_add(ctx: Ctx) -> web.StreamResponse:
    """Add a unit."""
    b = ctx.body
    return _ok(await ctx.services.units.create(b["id"], b["name"], b["kind"], b.get("parent_id"), ctx.actor), 201)


async def placements_add(ctx: Ctx) -> web.StreamResponse:
    """Put an officer, device, user or case in a unit."""
    b = ctx.body
    rid: Any = b["id"]
    if b["kind"] == "case":
        if not rid.isdigit():
            from server.errors import BadRequest

            raise BadRequest("a case is placed by its numeric id", code="bad_id")
        rid = int(rid)
    return _ok(await ctx.services.units.place(b["kind"], rid, b["unit_id"], scope_unit_id=b.get("scope_unit_id")))


async def scope_me(ctx: Ctx) -> web.StreamResponse:
    """The caller's scope."""
    return _ok((await ctx.services.units.scope(ctx.principal)).to_json())


HOLD_ADD = Body("LegalHoldAdd", {
    "target": F("string", "case or recording", enum=("case", "recording")),
    "case_id": F("integer", "the case (target case)", required=False, lo=1, hi=2**31 - 1),
    "device_id": F("string", "the recording's device (target recording)", required=False, pattern=r"[a-z2-7]{24}",
                   max_len=24),
    "recording_id": F("string", "the recording (target recording)", required=False,
                      pattern=r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", max_len=64),
    "reason": F("string", "why the footage must be kept (litigation, complaint, inquiry)", max_len=500),
})
HOLD_LIFT = Body("LegalHoldLift", {"reason": F("string", "why the hold ends", max_len=500)})
HOLD_ID = F("integer", "legal hold id", lo=1, hi=2**31 - 1)
HOLD_QUERY = {"active": F("boolean", "only holds in force", required=False)}


def _who(ctx: Ctx) -> Any:
    assert ctx.principal is not None
    return ctx.principal


async def holds_add(ctx: Ctx) -> web.StreamResponse:
    """Put a legal hold on a case or a recording."""
    return _ok(await ctx.services.holds.set_hold(ctx.body, _who(ctx)), 201)


async def holds_lift(ctx: Ctx) -> web.StreamResponse:
    """Lift a legal hold."""
    target = await ctx.services.holds.target_of(ctx.params["hold_id"])
    if target is not None:  # the guard saw only the hold's id: check what it holds
        kind, tid = target
        await ctx.services.units.check(ctx.principal, "case" if kind == "case" else "device",
                                       int(tid) if kind == "case" else tid.split("/")[0], "lift hold")
    return _ok(await ctx.services.holds.lift(ctx.params["hold_id"], ctx.body["reason"], _who(ctx)))


async def holds_list(ctx: Ctx) -> web.StreamResponse:
    """Legal holds, newest first."""
    return _ok({"holds": await ctx.services.holds.list_holds(bool(ctx.params.get("active", False)))})


async def retention_plan(ctx: Ctx) -> web.StreamResponse:
    """Each recording's retention class and end, and whether it expires now."""
    ids = await ctx.services.units.scoped_ids("device", await ctx.services.units.scope(ctx.principal))
    plan = await ctx.services.expiry.plan()
    return _ok({"time_ms": ctx.services.clock.now_ms(), "recordings": [
        {"device_id": f.device_id, "recording_id": f.recording_id, "class": r.klass, "retain_until_ms": r.until_ms,
         "held": f.held, "removed": f.removed, "expires_now": expire}
        for (f, r, expire) in plan.values() if ids is None or f.device_id in ids]})


async def retention_run(ctx: Ctx) -> web.StreamResponse:
    """Run the expiry job now."""
    return _ok(await ctx.services.expiry.run())


STATS_QUERY = {
    "since": F("integer", "from this time, ms since the epoch (default: 12 months ago)", required=False,
               lo=946_684_800_000, hi=4_102_444_799_999),
    "until": F("integer", "until this time, ms since the epoch (default: now)", required=False,
               lo=946_684_800_000, hi=4_102_444_799_999),
    "dimension": F("string", "unit (default), officer or device", required=False, enum=("unit", "officer", "device")),
    "format": F("string", "json (default) or csv", required=False, enum=("json", "csv")),
}
YEAR = F("integer", "calendar year", lo=2000, hi=2099)
PATH_PARAMS = {"hold_id": HOLD_ID, "year": YEAR}


async def stats(ctx: Ctx) -> web.StreamResponse:
    """Monthly statistics per unit, officer or device, in the caller's scope."""
    from server.services.stats import to_csv

    p = ctx.params
    now = ctx.services.clock.now_ms()
    report = await ctx.services.stats.report(p.get("since", now - 365 * 86_400_000), p.get("until", now + 1),
                                             p.get("dimension", "unit"),
                                             await ctx.services.units.scope(ctx.principal))
    if p.get("format", "json") == "csv":
        # Rows only: a spreadsheet sums its rows itself, and total lines among them would count twice.
        return web.Response(body=to_csv(report["rows"]).encode("utf-8"), content_type="text/csv", charset="utf-8")
    return _ok(report)


async def stats_public(ctx: Ctx) -> web.StreamResponse:
    """The yearly public summary (aggregates only)."""
    return _ok(await ctx.services.stats.public_summary(ctx.params["year"]))
