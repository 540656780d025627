"""Bodies, query parameters and thin handlers of the case, link, audit, review and policy endpoints.

The routes themselves are rows of the one route table in server/api/routes.py (which decides
authentication, roles, validation and the OpenAPI document); this module only keeps their
declarations and handlers out of that shared file.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.api.body import Body, F
from server.audit_report import FORMATS, LANGS, render
from server.case_terms import ACTIVITIES, CATEGORIES, STAGES
from server.services.audit import AuditFilters
from server.services.cases import STEP_STATUSES

if TYPE_CHECKING:
    from server.api.routes import Ctx

TIME_LO, TIME_HI = 946_684_800_000, 4_102_444_799_999  # 2000-01-01 to 2100-01-01, like protocol/schema.py
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"  # protocol identifiers (protocol/schema.py check_id)

CASE_ID = F("integer", "case id", lo=1, hi=2**31 - 1)
STEP_ID = F("string", "step id (a protocol identifier: devices carry it in manifests as case_step)",
            pattern=ID_PATTERN, max_len=64)
LINK_ID = F("integer", "link id", lo=1, hi=2**31 - 1)
POLICY_VERSION = F("string", "version of the recording-requirement list", pattern=ID_PATTERN, max_len=64)
PATH_PARAMS = {"case_id": CASE_ID, "step_id": STEP_ID, "link_id": LINK_ID, "version": POLICY_VERSION}


def _time(doc: str, required: bool = False) -> F:
    return F("integer", doc + ", ms since the epoch", required=required, lo=TIME_LO, hi=TIME_HI)


OFFICER_LIST = F("array", "officer ids", required=False, max_items=20,
                 items=F("string", "officer id", pattern=ID_PATTERN, max_len=64))
PARTIES = F("array", "parties (当事人)", required=False, max_items=50, items=F("string", "a party", max_len=200))

CASE_ADD = Body("CaseAdd", {
    "number": F("string", "case number (案号), unique", max_len=100),
    "category": F("string", "category (六类执法行为): " + ", ".join(f"{k} {v}" for k, v in CATEGORIES.items()),
                  enum=tuple(CATEGORIES)),
    "title": F("string", "what the case is about", max_len=500),
    "parties": PARTIES,
    "handler": F("string", "user name of the case handler (default: the caller, when a case handler)",
                 required=False, pattern=r"[a-z][a-z0-9_.-]{0,63}", max_len=64),
    "major": F("boolean", "major decision (重大执法决定): the decision needs a legal reviewer's sign-off",
               required=False),
    "unit": F("string", "enforcement unit", required=False, nullable=True, max_len=200),
})
CASE_PATCH = Body("CasePatch", {
    "title": F("string", "what the case is about", required=False, max_len=500),
    "parties": PARTIES,
    "handler": F("string", "user name of the case handler", required=False, pattern=r"[a-z][a-z0-9_.-]{0,63}",
                 max_len=64),
    "major": F("boolean", "major decision", required=False),
    "unit": F("string", "enforcement unit", required=False, nullable=True, max_len=200),
})
_STEP_FIELDS: dict[str, F] = {
    "title": F("string", "what happens in the step", required=False, nullable=True, max_len=200),
    "officers": OFFICER_LIST,
    "planned_start_ms": _time("planned start"),
    "planned_end_ms": _time("planned end"),
    "actual_start_ms": _time("actual start (set when the step starts, if not given)"),
    "actual_end_ms": _time("actual end (set when the step is completed, if not given)"),
    "location": F("string", "where", required=False, nullable=True, max_len=200),
}
STEP_ADD = Body("StepAdd", {
    "id": STEP_ID,
    "stage": F("string", "stage: " + ", ".join(f"{k} {v}" for k, v in STAGES.items()), enum=tuple(STAGES)),
    "activity": F("string", "activity (decides the recording requirement): "
                  + ", ".join(f"{k} {v}" for k, v in ACTIVITIES.items()), enum=tuple(ACTIVITIES)),
    **_STEP_FIELDS,
})
STEP_PATCH = Body("StepPatch", {
    "activity": F("string", "activity (the requirement is decided again, by the list in force)", required=False,
                  enum=tuple(ACTIVITIES)),
    "status": F("string", "status (moves forward only)", required=False, enum=STEP_STATUSES),
    **_STEP_FIELDS,
})
LINK_ADD = Body("LinkAdd", {
    "device_id": F("string", "device of the recording", pattern=r"[a-z2-7]{24}", max_len=24),
    "recording_id": F("string", "recording id", pattern=ID_PATTERN, max_len=64),
    "from_ms": _time("start of the linked range (device clock; omit both for the whole recording)"),
    "until_ms": _time("end of the linked range"),
    "reason": F("string", "why this footage documents this step", max_len=500),
})
UNLINK = Body("Unlink", {"reason": F("string", "why the link is wrong", max_len=500)})
SIGNOFF = Body("LegalSignoff", {
    "opinion": F("string", "the legal review opinion (法制审核意见)", max_len=2000, multiline=True),
    "override_reason": F("string", "why to sign off although the audit shows missing, incomplete or unverified "
                         "footage (recorded as finding review.override)", required=False, nullable=True,
                         max_len=2000, multiline=True),
})
POLICY_LOAD = Body("PolicyLoad", {
    "text": F("string", "the requirement list, YAML (format custody/recording-requirements/v1)", max_len=200_000,
              multiline=True),
})

CASE_QUERY = {
    "handler": F("string", "only this handler's cases", required=False, pattern=r"[a-z][a-z0-9_.-]{0,63}",
                 max_len=64),
    "category": F("string", "only this category", required=False, enum=tuple(CATEGORIES)),
}
AUDIT_QUERY = {
    "case_id": F("integer", "only this case", required=False, lo=1, hi=2**31 - 1),
    "officer_id": F("string", "only this officer", required=False, pattern=ID_PATTERN, max_len=64),
    "device_id": F("string", "only this device", required=False, pattern=r"[a-z2-7]{24}", max_len=24),
    "since": F("integer", "from this time, ms since the epoch", required=False, lo=TIME_LO, hi=TIME_HI),
    "until": F("integer", "until this time, ms since the epoch", required=False, lo=TIME_LO, hi=TIME_HI),
    "format": F("string", "json (default), text or csv", required=False, enum=FORMATS),
    "lang": F("string", "language of text and csv: zh (default) or en", required=False, enum=LANGS),
}


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data, ensure_ascii=False).encode("utf-8"),
                        content_type="application/json", charset="utf-8")


def _principal(ctx: Ctx) -> Any:
    assert ctx.principal is not None
    return ctx.principal


async def cases_list(ctx: Ctx) -> web.StreamResponse:
    """List cases."""
    units = ctx.services.units
    return _ok({"cases": await ctx.services.cases.list_cases(
        handler=ctx.params.get("handler"), category=ctx.params.get("category"),
        case_ids=await units.scoped_ids("case", await units.scope(ctx.principal)))})


async def cases_add(ctx: Ctx) -> web.StreamResponse:
    """Open a case."""
    case = await ctx.services.cases.create_case(ctx.body, _principal(ctx))
    scope = await ctx.services.units.scope(ctx.principal)
    if scope.root is not None:  # a case opened by someone working in a unit belongs to that unit
        case["unit_id"] = (await ctx.services.units.place("case", case["id"], scope.root))["unit_id"]
    return _ok(case, 201)


async def cases_get(ctx: Ctx) -> web.StreamResponse:
    """A case with its steps and links."""
    return _ok(await ctx.services.cases.get_case(ctx.params["case_id"]))


async def cases_patch(ctx: Ctx) -> web.StreamResponse:
    """Change a case."""
    return _ok(await ctx.services.cases.update_case(ctx.params["case_id"], ctx.body, _principal(ctx)))


async def steps_add(ctx: Ctx) -> web.StreamResponse:
    """Plan a step."""
    return _ok(await ctx.services.cases.add_step(ctx.params["case_id"], ctx.body, _principal(ctx)), 201)


async def steps_get(ctx: Ctx) -> web.StreamResponse:
    """A step with its links and sign-offs."""
    return _ok(await ctx.services.cases.get_step(ctx.params["case_id"], ctx.params["step_id"]))


async def steps_patch(ctx: Ctx) -> web.StreamResponse:
    """Change a step (status, windows, officers, ...)."""
    return _ok(await ctx.services.cases.update_step(ctx.params["case_id"], ctx.params["step_id"], ctx.body,
                                                    _principal(ctx)))


async def steps_suggestions(ctx: Ctx) -> web.StreamResponse:
    """Recordings that might belong to a step."""
    return _ok({"suggestions": await ctx.services.cases.suggestions(ctx.params["case_id"], ctx.params["step_id"])})


async def links_add(ctx: Ctx) -> web.StreamResponse:
    """Link a recording or a time range to a step."""
    return _ok(await ctx.services.cases.link(ctx.params["case_id"], ctx.params["step_id"], ctx.body,
                                             _principal(ctx)), 201)


async def links_unlink(ctx: Ctx) -> web.StreamResponse:
    """Unlink."""
    return _ok(await ctx.services.cases.unlink(ctx.params["case_id"], ctx.params["step_id"], ctx.params["link_id"],
                                               ctx.body["reason"], _principal(ctx)))


async def case_events(ctx: Ctx) -> web.StreamResponse:
    """A case's link events."""
    return _ok({"events": await ctx.services.cases.events(ctx.params["case_id"])})


async def signoff(ctx: Ctx) -> web.StreamResponse:
    """A legal reviewer signs off a major decision."""
    return _ok(await ctx.services.review.sign_off(ctx.params["case_id"], ctx.params["step_id"], ctx.body["opinion"],
                                                  ctx.body.get("override_reason"), _principal(ctx)), 201)


async def audit(ctx: Ctx) -> web.StreamResponse:
    """The audit of missing recordings, as JSON, text or CSV."""
    p = ctx.params
    scope = await ctx.services.units.scope(ctx.principal)
    if not scope.everywhere and not any(p.get(k) for k in ("case_id", "officer_id", "device_id")):
        # The guard already checked a named case, officer or device; an unfiltered audit spans every unit.
        await ctx.services.units.refuse(ctx.principal, "audit", "all", "GET /api/v1/audit", None, scope)
    report = await ctx.services.audit.run(AuditFilters(
        case_id=p.get("case_id"), officer_id=p.get("officer_id"), device_id=p.get("device_id"),
        since_ms=p.get("since"), until_ms=p.get("until")))
    fmt = p.get("format", "json")
    if fmt == "json":
        return _ok(report)
    content_type = "text/csv" if fmt == "csv" else "text/plain"
    return web.Response(body=render(report, fmt, p.get("lang", "zh")).encode("utf-8"), content_type=content_type,
                        charset="utf-8")


async def policy_current(ctx: Ctx) -> web.StreamResponse:
    """The requirement list in force."""
    return _ok((await ctx.services.policy.current()).to_json())


async def policy_versions(ctx: Ctx) -> web.StreamResponse:
    """Every version loaded."""
    return _ok({"versions": await ctx.services.policy.versions()})


async def policy_version(ctx: Ctx) -> web.StreamResponse:
    """One version as loaded."""
    return _ok((await ctx.services.policy.version(ctx.params["version"])).to_json())


async def policy_load(ctx: Ctx) -> web.StreamResponse:
    """Load a new version of the requirement list."""
    policy, created = await ctx.services.policy.load(ctx.body["text"], ctx.actor)
    return _ok({**policy.to_json(with_text=False), "created": created}, 201 if created else 200)
