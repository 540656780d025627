"""Cases, their steps, and the links that tie recordings to steps (执法全过程记录: every step leaves a trace).

A case has one of the six categories and a handler (a user with the ``case_handler`` role); a
step has a stage, an activity, officers, planned and actual windows and a status. When a step
gets its activity, the requirement list in force decides whether it must be recorded, and the
step keeps that level and the list's version.

Links say which footage documents which step:

- **auto**: the device selected the step, so its signed entries carry ``case_step``. Such links
  are made by :meth:`CasesService.sync_auto_links`, run before anything reads links (so ingest
  needs no change); an auto link covers exactly the entries that carry the step.
- **manual**: a case handler links a whole recording or a time range of it, with a reason.

A link is never deleted: unlinking stamps it with who, when and why. Every link and unlink also
appends a row to ``link_events``, and each function in :attr:`CasesService.link_event_hooks` is
called with the event inside the same transaction: that is where the transparency log attaches.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from custody.clock import Clock
from protocol.schema import Invalid, check_id
from server.auth import Principal, Role
from server.case_terms import CATEGORIES
from server.db.database import Database
from server.db.dialect import insert_ignore
from server.db.schema import (
    assignments,
    case_steps,
    cases,
    entries,
    link_events,
    officers,
    review_signoffs,
    step_links,
    users,
)
from server.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from server.services.policy import PolicyService

#: Step statuses and the changes allowed between them (a data table, like the chunk states).
STEP_TRANSITIONS: dict[str, frozenset[str]] = {
    "planned": frozenset({"in_progress", "completed", "cancelled"}),
    "in_progress": frozenset({"completed", "cancelled"}),
    "completed": frozenset(),
    "cancelled": frozenset(),
}
STEP_STATUSES = tuple(STEP_TRANSITIONS)

LinkEventHook = Callable[[AsyncConnection, dict[str, Any]], Awaitable[None]]

_NUMBER_RE = re.compile(r"[^\x00-\x1f]{1,100}")


def case_json(row: Any) -> dict[str, Any]:
    """API form of a case."""
    return {"id": row.id, "number": row.number, "category": row.category, "category_zh": CATEGORIES[row.category],
            "title": row.title, "parties": list(row.parties), "handler": row.handler, "major": bool(row.major),
            "unit": row.unit, "created_ms": row.created_ms, "created_by": row.created_by,
            "updated_ms": row.updated_ms, "unit_id": row._mapping.get("unit_id")}


def step_json(row: Any) -> dict[str, Any]:
    """API form of a step."""
    return {"id": row.id, "case_id": row.case_id, "stage": row.stage, "activity": row.activity, "title": row.title,
            "officers": list(row.officers), "planned_start_ms": row.planned_start_ms,
            "planned_end_ms": row.planned_end_ms, "actual_start_ms": row.actual_start_ms,
            "actual_end_ms": row.actual_end_ms, "location": row.location, "status": row.status,
            "requirement": row.requirement, "policy_version": row.policy_version, "created_ms": row.created_ms,
            "created_by": row.created_by, "updated_ms": row.updated_ms}


def link_json(row: Any) -> dict[str, Any]:
    """API form of a link."""
    return {"id": row.id, "step_id": row.step_id, "device_id": row.device_id, "recording_id": row.recording_id,
            "from_ms": row.from_ms, "until_ms": row.until_ms, "source": row.source, "created_ms": row.created_ms,
            "created_by": row.created_by, "reason": row.reason, "removed_ms": row.removed_ms,
            "removed_by": row.removed_by, "removed_reason": row.removed_reason}


def event_json(row: Any) -> dict[str, Any]:
    """API form of a link event."""
    return {"id": row.id, "link_id": row.link_id, "case_id": row.case_id, "step_id": row.step_id,
            "action": row.action, "device_id": row.device_id, "recording_id": row.recording_id,
            "from_ms": row.from_ms, "until_ms": row.until_ms, "source": row.source, "actor": row.actor,
            "reason": row.reason, "time_ms": row.time_ms, "log_index": row.log_index}


def step_window(step: Any) -> tuple[int, int] | None:
    """The window a step's footage is judged against: the actual one when known, else the planned one."""
    if step.actual_start_ms is not None and step.actual_end_ms is not None:
        return step.actual_start_ms, step.actual_end_ms
    if step.planned_start_ms is not None and step.planned_end_ms is not None:
        return step.planned_start_ms, step.planned_end_ms
    return None


def _check_step_id(step_id: str) -> None:
    try:
        check_id("step id", step_id)
    except Invalid as exc:
        raise BadRequest(f"{exc}: a step id travels in signed manifests, so it is a protocol identifier",
                         code="bad_id") from None


def _check_window(name: str, start: int | None, end: int | None, *, open_end: bool = False) -> None:
    # A step in progress has started but not ended: only the actual window may be open-ended.
    if (start is None and end is not None) or (start is not None and end is None and not open_end):
        raise Unprocessable(f"{name} needs both its start and its end", code="bad_window")
    # Equal is allowed: a step completed at once (status change without times) has an empty window.
    if start is not None and end is not None and start > end:
        raise Unprocessable(f"{name} must not end before it starts", code="bad_window")


async def recording_spans(conn: AsyncConnection, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """First and last instant (device clock) and chunk count of each (device, recording) that exists."""
    pairs = list(set(pairs))
    if not pairs:
        return {}
    end = entries.c.time_ms + sa.func.coalesce(entries.c.duration_ms, 0)
    rows = (await conn.execute(
        sa.select(entries.c.device_id, entries.c.recording_id, sa.func.min(entries.c.time_ms).label("start_ms"),
                  sa.func.max(end).label("end_ms"),
                  sa.func.count(entries.c.sha256).label("chunks"))
        .where(sa.tuple_(entries.c.device_id, entries.c.recording_id).in_(pairs))
        .group_by(entries.c.device_id, entries.c.recording_id))).all()
    return {(r.device_id, r.recording_id): r for r in rows}


class CasesService:
    """Cases, steps and links."""

    def __init__(self, db: Database, clock: Clock, policy: PolicyService) -> None:
        self.db = db
        self.clock = clock
        self.policy = policy
        #: Called inside the transaction with every new link event (the transparency log's hook).
        self.link_event_hooks: list[LinkEventHook] = []

    # -- who may write ----------------------------------------------------------------------------

    @staticmethod
    def _may_write(principal: Principal, case: Any) -> None:
        # A case handler works on their own cases; an admin on any (the route table admits no one else).
        if principal.role is Role.CASE_HANDLER and case.handler != principal.name:
            raise Forbidden(f"case {case.number} is handled by {case.handler}, not {principal.name}",
                            code="not_case_handler")

    async def _check_handler(self, conn: AsyncConnection, name: str) -> None:
        row = (await conn.execute(sa.select(users.c.role, users.c.disabled_ms).where(users.c.name == name))).first()
        if row is None or row.role != Role.CASE_HANDLER.value or row.disabled_ms is not None:
            raise Unprocessable(f"{name!r} is not an active user with the case_handler role", code="unknown_handler")

    async def _check_officers(self, conn: AsyncConnection, ids: list[str]) -> None:
        if len(set(ids)) != len(ids):
            raise BadRequest("an officer is listed twice", code="bad_value")
        found = set((await conn.execute(sa.select(officers.c.id).where(officers.c.id.in_(ids)))).scalars())
        missing = [i for i in ids if i not in found]
        if missing:
            raise Unprocessable(f"unknown officer {', '.join(missing)}", code="unknown_officer", officers=missing)

    # -- cases ---------------------------------------------------------------------------------------

    async def _case(self, conn: AsyncConnection, case_id: int) -> Any:
        row = (await conn.execute(sa.select(cases).where(cases.c.id == case_id))).first()
        if row is None:
            raise NotFound(f"no case {case_id}", code="unknown_case")
        return row

    async def create_case(self, body: dict[str, Any], principal: Principal) -> dict[str, Any]:
        """Open a case; a case handler opens cases they handle themselves."""
        handler = body.get("handler") or (principal.name if principal.role is Role.CASE_HANDLER else None)
        if handler is None:
            raise BadRequest("missing field handler (the case handler's user name)", code="missing_field",
                             field="handler")
        if principal.role is Role.CASE_HANDLER and handler != principal.name:
            raise Forbidden("a case handler opens cases they handle themselves", code="not_case_handler")
        if not _NUMBER_RE.fullmatch(body["number"]):
            raise BadRequest("number must be 1 to 100 printable characters", code="bad_value", field="number")
        now = self.clock.now_ms()
        try:
            async with self.db.write() as conn:
                await self._check_handler(conn, handler)
                result = await conn.execute(cases.insert().values(
                    number=body["number"], category=body["category"], title=body["title"],
                    parties=list(body.get("parties") or []), handler=handler, major=bool(body.get("major", False)),
                    unit=body.get("unit"), created_ms=now, created_by=principal.actor, updated_ms=now))
                row = await self._case(conn, result.inserted_primary_key[0])  # type: ignore[index]
        except IntegrityError:
            raise Conflict(f"case number {body['number']!r} exists", code="case_exists") from None
        return case_json(row)

    async def list_cases(self, *, handler: str | None = None, category: str | None = None,
                         case_ids: set[int] | None = None) -> list[dict[str, Any]]:
        """Cases, oldest first."""
        stmt = sa.select(cases).order_by(cases.c.id)
        if handler is not None:
            stmt = stmt.where(cases.c.handler == handler)
        if case_ids is not None:  # a caller scoped to some units sees their cases only
            stmt = stmt.where(cases.c.id.in_(sorted(case_ids)))
        if category is not None:
            stmt = stmt.where(cases.c.category == category)
        async with self.db.read() as conn:
            return [case_json(r) for r in (await conn.execute(stmt)).all()]

    async def get_case(self, case_id: int) -> dict[str, Any]:
        """A case with its steps (and each step's active links)."""
        await self.sync_auto_links()
        async with self.db.read() as conn:
            case = case_json(await self._case(conn, case_id))
            steps = (await conn.execute(sa.select(case_steps).where(case_steps.c.case_id == case_id)
                                        .order_by(case_steps.c.created_ms, case_steps.c.id))).all()
            links = (await conn.execute(sa.select(step_links).where(
                step_links.c.step_id.in_([s.id for s in steps]), step_links.c.removed_ms.is_(None))
                .order_by(step_links.c.id))).all()
        by_step: dict[str, list[dict[str, Any]]] = {}
        for link in links:
            by_step.setdefault(link.step_id, []).append(link_json(link))
        case["steps"] = [{**step_json(s), "links": by_step.get(s.id, [])} for s in steps]
        return case

    async def update_case(self, case_id: int, changes: dict[str, Any], principal: Principal) -> dict[str, Any]:
        """Change a case's title, parties, unit, major flag or handler."""
        if not changes:
            raise BadRequest("nothing to change", code="missing_field")
        async with self.db.write() as conn:
            case = await self._case(conn, case_id)
            self._may_write(principal, case)
            if "handler" in changes:
                await self._check_handler(conn, changes["handler"])
            if "parties" in changes:
                changes["parties"] = list(changes["parties"])
            await conn.execute(cases.update().where(cases.c.id == case_id).values(
                **changes, updated_ms=self.clock.now_ms()))
            return case_json(await self._case(conn, case_id))

    # -- steps ---------------------------------------------------------------------------------------

    async def _step(self, conn: AsyncConnection, case_id: int, step_id: str) -> tuple[Any, Any]:
        case = await self._case(conn, case_id)
        step = (await conn.execute(sa.select(case_steps).where(case_steps.c.id == step_id))).first()
        if step is None:
            raise NotFound(f"no step {step_id}", code="unknown_step")
        if step.case_id != case_id:
            raise NotFound(f"step {step_id} belongs to another case, not to case {case.number}",
                           code="step_not_in_case")
        return case, step

    async def add_step(self, case_id: int, body: dict[str, Any], principal: Principal) -> dict[str, Any]:
        """Plan a step; the requirement list in force decides (and records) its recording requirement."""
        _check_step_id(body["id"])
        _check_window("the planned window", body.get("planned_start_ms"), body.get("planned_end_ms"))
        _check_window("the actual window", body.get("actual_start_ms"), body.get("actual_end_ms"), open_end=True)
        policy = await self.policy.current()
        now = self.clock.now_ms()
        try:
            async with self.db.write() as conn:
                case = await self._case(conn, case_id)
                self._may_write(principal, case)
                officer_ids = list(body.get("officers") or [])
                await self._check_officers(conn, officer_ids)
                await conn.execute(case_steps.insert().values(
                    id=body["id"], case_id=case_id, stage=body["stage"], activity=body["activity"],
                    title=body.get("title"), officers=officer_ids, planned_start_ms=body.get("planned_start_ms"),
                    planned_end_ms=body.get("planned_end_ms"), actual_start_ms=body.get("actual_start_ms"),
                    actual_end_ms=body.get("actual_end_ms"), location=body.get("location"), status="planned",
                    requirement=policy.requirement(case.category, body["activity"]), policy_version=policy.version,
                    created_ms=now, created_by=principal.actor, updated_ms=now))
                _, step = await self._step(conn, case_id, body["id"])
        except IntegrityError:
            raise Conflict(f"step id {body['id']!r} exists", code="step_exists") from None
        return step_json(step)

    async def get_step(self, case_id: int, step_id: str) -> dict[str, Any]:
        """A step with all its links (removed ones too: the history stays visible)."""
        await self.sync_auto_links()
        async with self.db.read() as conn:
            _, step = await self._step(conn, case_id, step_id)
            links = (await conn.execute(sa.select(step_links).where(step_links.c.step_id == step_id)
                                        .order_by(step_links.c.id))).all()
            signoffs = (await conn.execute(sa.select(review_signoffs).where(review_signoffs.c.step_id == step_id)
                                           .order_by(review_signoffs.c.id))).all()
        return {**step_json(step), "links": [link_json(r) for r in links],
                "signoffs": [signoff_json(r) for r in signoffs]}

    async def update_step(self, case_id: int, step_id: str, changes: dict[str, Any],
                          principal: Principal) -> dict[str, Any]:
        """Change a step; status moves only forward, and a major case's decision needs a legal sign-off first."""
        if not changes:
            raise BadRequest("nothing to change", code="missing_field")
        now = self.clock.now_ms()
        policy = await self.policy.current() if "activity" in changes else None
        async with self.db.write() as conn:
            case, step = await self._step(conn, case_id, step_id)
            self._may_write(principal, case)
            values = dict(changes)
            if "officers" in values:
                values["officers"] = list(values["officers"])
                await self._check_officers(conn, values["officers"])
            if policy is not None:
                values["requirement"] = policy.requirement(case.category, values["activity"])
                values["policy_version"] = policy.version
            status = values.get("status")
            if status is not None and status != step.status:
                if status not in STEP_TRANSITIONS[step.status]:
                    raise Conflict(f"step {step_id} is {step.status}; it cannot become {status}",
                                   code="illegal_status_change")
                if status in ("in_progress", "completed") and step.actual_start_ms is None:
                    values.setdefault("actual_start_ms", now)
                if status == "completed" and step.actual_end_ms is None:
                    values.setdefault("actual_end_ms", now)
                if status == "completed" and case.major and step.stage == "decision":
                    signed = (await conn.execute(sa.select(review_signoffs.c.id).where(
                        review_signoffs.c.step_id == step_id).limit(1))).first()
                    if signed is None:
                        raise Conflict(f"case {case.number} is a major case: its decision step needs a legal "
                                       "reviewer's sign-off before it is completed (重大执法决定法制审核)",
                                       code="legal_review_required")
            elif status is not None:
                del values["status"]
            for name in ("planned", "actual"):
                _check_window(f"the {name} window", values.get(f"{name}_start_ms", getattr(step, f"{name}_start_ms")),
                              values.get(f"{name}_end_ms", getattr(step, f"{name}_end_ms")), open_end=name == "actual")
            await conn.execute(case_steps.update().where(case_steps.c.id == step_id).values(**values, updated_ms=now))
            _, step = await self._step(conn, case_id, step_id)
        return step_json(step)

    # -- links ---------------------------------------------------------------------------------------

    async def _append_event(self, conn: AsyncConnection, link: Any, case_id: int, action: str, actor: str,
                            reason: str, time_ms: int) -> None:
        values = {"link_id": link.id, "case_id": case_id, "step_id": link.step_id, "action": action,
                  "device_id": link.device_id, "recording_id": link.recording_id, "from_ms": link.from_ms,
                  "until_ms": link.until_ms, "source": link.source, "actor": actor, "reason": reason[:500],
                  "time_ms": time_ms}
        result = await conn.execute(link_events.insert().values(**values))
        event = {"id": result.inserted_primary_key[0], **values, "log_index": None}  # type: ignore[index]
        for hook in self.link_event_hooks:
            await hook(conn, event)

    async def sync_auto_links(self) -> int:
        """Make the auto links the devices asked for (entries carrying a known step); returns how many."""
        carrying = sa.select(entries.c.device_id, entries.c.recording_id, entries.c.case_step,
                             sa.func.min(entries.c.received_ms).label("first_ms")).where(
            entries.c.case_step.is_not(None),
            entries.c.case_step.in_(sa.select(case_steps.c.id)),
            ~sa.exists().where(step_links.c.source == "auto", step_links.c.step_id == entries.c.case_step,
                               step_links.c.device_id == entries.c.device_id,
                               step_links.c.recording_id == entries.c.recording_id),
        ).group_by(entries.c.device_id, entries.c.recording_id, entries.c.case_step)
        async with self.db.read() as conn:
            todo = (await conn.execute(carrying)).all()
        if not todo:
            return 0
        made = 0
        async with self.db.write() as conn:
            for row in todo:
                key = f"auto:{row.case_step}:{row.device_id}:{row.recording_id}"
                inserted = await insert_ignore(conn, step_links, {
                    "step_id": row.case_step, "device_id": row.device_id, "recording_id": row.recording_id,
                    "from_ms": None, "until_ms": None, "source": "auto", "auto_key": key,
                    "created_ms": row.first_ms, "created_by": f"device:{row.device_id}",
                    "reason": f"the device's signed entries carry case_step {row.case_step}"}, ["auto_key"])
                if not inserted:
                    continue  # another process made it first
                link = (await conn.execute(sa.select(step_links).where(step_links.c.auto_key == key))).one()
                case_id = (await conn.execute(sa.select(case_steps.c.case_id).where(
                    case_steps.c.id == row.case_step))).scalar_one()
                await self._append_event(conn, link, case_id, "link", link.created_by, link.reason, row.first_ms)
                made += 1
        return made

    async def _effective_range(self, conn: AsyncConnection, link: Any, span: Any) -> tuple[int, int]:
        """The part of the recording a link claims: its range, the whole recording, or the entries carrying the step."""
        if link.from_ms is not None:
            return link.from_ms, link.until_ms
        if link.source == "auto":
            end = entries.c.time_ms + sa.func.coalesce(entries.c.duration_ms, 0)
            row = (await conn.execute(sa.select(sa.func.min(entries.c.time_ms), sa.func.max(end)).where(
                entries.c.device_id == link.device_id, entries.c.recording_id == link.recording_id,
                entries.c.case_step == link.step_id))).one()
            return int(row[0]), int(row[1])
        return span.start_ms, span.end_ms

    async def link(self, case_id: int, step_id: str, body: dict[str, Any], principal: Principal) -> dict[str, Any]:
        """Link a recording, or a time range of it, to a step (the reason is kept with the link)."""
        device_id, recording_id = body["device_id"], body["recording_id"]
        start, end = body.get("from_ms"), body.get("until_ms")
        if (start is None) != (end is None):
            raise BadRequest("a time range needs both from_ms and until_ms", code="missing_field")
        if start is not None and end is not None and start >= end:
            raise Unprocessable("from_ms must be before until_ms", code="bad_window")
        now = self.clock.now_ms()
        await self.sync_auto_links()  # a contradiction with what the device said must be seen now
        async with self.db.write() as conn:
            case, _ = await self._step(conn, case_id, step_id)
            self._may_write(principal, case)
            span = (await recording_spans(conn, [(device_id, recording_id)])).get((device_id, recording_id))
            if span is None:
                raise NotFound(f"no recording {recording_id} of device {device_id}", code="unknown_recording")
            if start is not None and end is not None and (start < span.start_ms or end > span.end_ms):
                raise Unprocessable(f"the range {start}..{end} is outside recording {recording_id} "
                                    f"({span.start_ms}..{span.end_ms})", code="range_outside_recording",
                                    recording_start_ms=span.start_ms, recording_end_ms=span.end_ms)
            new = (start, end) if start is not None and end is not None else (span.start_ms, span.end_ms)
            active = (await conn.execute(sa.select(step_links).where(
                step_links.c.device_id == device_id, step_links.c.recording_id == recording_id,
                step_links.c.removed_ms.is_(None)))).all()
            for other in active:
                lo, hi = await self._effective_range(conn, other, span)
                if lo < new[1] and new[0] < hi:
                    if other.step_id == step_id:
                        raise Conflict(f"link {other.id} already ties this footage to step {step_id}",
                                       code="link_exists", link_id=other.id)
                    raise Conflict(f"link {other.id} ties {lo}..{hi} of this recording to step {other.step_id}: "
                                   "the same footage cannot document two steps; unlink or narrow it first",
                                   code="link_overlap", link_id=other.id, other_step_id=other.step_id)
            result = await conn.execute(step_links.insert().values(
                step_id=step_id, device_id=device_id, recording_id=recording_id, from_ms=start, until_ms=end,
                source="manual", auto_key=None, created_ms=now, created_by=principal.actor, reason=body["reason"]))
            link = (await conn.execute(sa.select(step_links).where(
                step_links.c.id == result.inserted_primary_key[0]))).one()  # type: ignore[index]
            await self._append_event(conn, link, case_id, "link", principal.actor, body["reason"], now)
        return link_json(link)

    async def unlink(self, case_id: int, step_id: str, link_id: int, reason: str,
                     principal: Principal) -> dict[str, Any]:
        """End a link (it stays on record with who, when and why)."""
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            case, _ = await self._step(conn, case_id, step_id)
            self._may_write(principal, case)
            link = (await conn.execute(sa.select(step_links).where(step_links.c.id == link_id))).first()
            if link is None or link.step_id != step_id:
                raise NotFound(f"step {step_id} has no link {link_id}", code="unknown_link")
            if link.removed_ms is not None:
                raise Conflict(f"link {link_id} was already unlinked", code="link_removed")
            await conn.execute(step_links.update().where(step_links.c.id == link_id, step_links.c.removed_ms.is_(None))
                               .values(removed_ms=now, removed_by=principal.actor, removed_reason=reason))
            link = (await conn.execute(sa.select(step_links).where(step_links.c.id == link_id))).one()
            await self._append_event(conn, link, case_id, "unlink", principal.actor, reason, now)
        return link_json(link)

    async def events(self, case_id: int) -> list[dict[str, Any]]:
        """Every link change of a case, in order."""
        await self.sync_auto_links()
        async with self.db.read() as conn:
            await self._case(conn, case_id)
            rows = (await conn.execute(sa.select(link_events).where(link_events.c.case_id == case_id)
                                       .order_by(link_events.c.id))).all()
        return [event_json(r) for r in rows]

    # -- suggestions ---------------------------------------------------------------------------------

    async def suggestions(self, case_id: int, step_id: str) -> list[dict[str, Any]]:
        """Recordings of the step's officers (by device assignment, or naming them) overlapping its window."""
        await self.sync_auto_links()
        async with self.db.read() as conn:
            _, step = await self._step(conn, case_id, step_id)
            window = step_window(step)
            if window is None or not step.officers:
                return []
            return await suggest(conn, step_id, list(step.officers), window)


async def suggest(conn: AsyncConnection, step_id: str | None, officer_ids: list[str],
                  window: tuple[int, int]) -> list[dict[str, Any]]:
    """Recordings not linked to ``step_id`` with footage in ``window`` by one of ``officer_ids``."""
    w0, w1 = window
    found: dict[tuple[str, str], dict[str, Any]] = {}
    rows = (await conn.execute(sa.select(assignments).where(
        assignments.c.officer_id.in_(officer_ids), assignments.c.from_ms < w1,
        sa.or_(assignments.c.until_ms.is_(None), assignments.c.until_ms > w0)))).all()
    chunk_end = entries.c.time_ms + sa.func.coalesce(entries.c.duration_ms, 0)
    probes = [(a.officer_id, entries.c.device_id == a.device_id, max(w0, a.from_ms),
               min(w1, a.until_ms if a.until_ms is not None else w1)) for a in rows]
    probes += [(o, entries.c.officer_id == o, w0, w1) for o in officer_ids]
    for officer_id, who, lo, hi in probes:
        hits = (await conn.execute(sa.select(entries.c.device_id, entries.c.recording_id).where(
            who, entries.c.time_ms < hi, chunk_end > lo).distinct())).all()
        for hit in hits:
            found.setdefault((hit.device_id, hit.recording_id), {"officer_id": officer_id})
    if not found:
        return []
    spans = await recording_spans(conn, found)
    links = (await conn.execute(sa.select(step_links.c.device_id, step_links.c.recording_id, step_links.c.step_id)
                                .where(sa.tuple_(step_links.c.device_id, step_links.c.recording_id).in_(list(found)),
                                       step_links.c.removed_ms.is_(None)))).all()
    linked: dict[tuple[str, str], set[str]] = {}
    for link in links:
        linked.setdefault((link.device_id, link.recording_id), set()).add(link.step_id)
    out = []
    for key, info in found.items():
        if step_id is not None and step_id in linked.get(key, set()):
            continue
        span = spans[key]
        overlap = min(w1, span.end_ms) - max(w0, span.start_ms)
        if overlap <= 0:
            continue
        out.append({"device_id": key[0], "recording_id": key[1], "officer_id": info["officer_id"],
                    "start_ms": span.start_ms, "end_ms": span.end_ms, "overlap_ms": overlap, "chunks": span.chunks,
                    "linked_to": sorted(linked.get(key, set()))})
    out.sort(key=lambda s: (-s["overlap_ms"], s["device_id"], s["recording_id"]))
    return out


def signoff_json(row: Any) -> dict[str, Any]:
    """API form of a legal-review sign-off."""
    return {"id": row.id, "case_id": row.case_id, "step_id": row.step_id, "reviewer": row.reviewer,
            "opinion": row.opinion, "override_reason": row.override_reason, "blocking": row.blocking,
            "created_ms": row.created_ms}

