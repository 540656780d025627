"""Legal holds, retention applied to the stores, and the expiry job: the only way footage leaves.

The decision is server/retention.py's pure ``should_expire``; this module gathers the facts for
it, applies what it says (extend the S3 retain-until date, put or lift the Object Lock legal hold),
and removes expired objects with a warrant that only :class:`ExpiryJob` makes. Each removal is
recorded with the receipt of what was removed (``footage_retention.removed_*``, and the
transparency log's expiry leaf where the log exists). Setting and lifting a legal hold are hold
leaves of the log, in the transaction that records them.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from custody.clock import Clock
from protocol.leaves import ExpiryLeaf, HoldLeaf, text_sha256
from server.auth import Principal
from server.config import RetentionConfig
from server.db.database import Database
from server.db.dialect import insert_ignore
from server.db.schema import (
    case_steps,
    cases,
    entries,
    footage_retention,
    legal_holds,
    log_leaves,
    review_signoffs,
    step_links,
)
from server.errors import BadRequest, Conflict, NotFound
from server.log.service import LogService
from server.retention import (
    INDEFINITE,
    CaseLife,
    FootageFacts,
    Retention,
    RetentionPolicy,
    retention_for,
    should_expire,
)
from server.storage.base import FootageStore

log = logging.getLogger(__name__)

HOLD_TARGETS = ("case", "recording")
_ENDED = ("completed", "cancelled")

#: Called with the connection and a description of each removal (the transparency log's hook).
RemovalHook = Callable[[AsyncConnection, dict[str, Any]], Awaitable[None]]


class ExpiryWarrant:
    """The expiry job's permission to remove one object; stores refuse removals without one."""

    __slots__ = ("_key",)

    def __init__(self, key: str, *, _job: ExpiryJob) -> None:
        if not isinstance(_job, ExpiryJob):
            raise TypeError("only the expiry job issues warrants")
        self._key = key

    def valid_for(self, key: str) -> bool:
        """True for the key it was issued for."""
        return self._key == key


def hold_json(row: Any, log_index: dict[str, int] | None = None) -> dict[str, Any]:
    """JSON form of a legal hold, with the log indexes of its set and lift leaves (by subject)."""
    found = log_index or {}
    return {"id": row.id, "target": row.target, "target_id": row.target_id, "reason": row.reason,
            "set_ms": row.set_ms, "set_by": row.set_by, "lifted_ms": row.lifted_ms, "lifted_by": row.lifted_by,
            "lift_reason": row.lift_reason, "active": row.lifted_ms is None,
            "set_log_index": found.get(hold_subject(row.id, "set")),
            "lift_log_index": found.get(hold_subject(row.id, "lift"))}


def hold_subject(hold_id: int, action: str) -> str:
    """The log subject of a hold's set or lift leaf (unique: each end is logged once)."""
    return f"hold-{action}:{hold_id}"


async def _hold_log_index(conn: AsyncConnection, hold_ids: list[int]) -> dict[str, int]:
    """Log indexes of the holds' leaves, by subject (the subject is the link; the hold table has no column)."""
    subjects = [hold_subject(i, a) for i in hold_ids for a in ("set", "lift")]
    found: dict[str, int] = {}
    for start in range(0, len(subjects), 500):  # bounded IN lists
        rows = (await conn.execute(sa.select(log_leaves.c.subject, log_leaves.c.idx).where(
            log_leaves.c.subject.in_(subjects[start:start + 500])))).all()
        found.update({r.subject: int(r.idx) for r in rows})
    return found


def policy_of(config: RetentionConfig) -> RetentionPolicy:
    """The pure policy from the configuration."""
    return RetentionPolicy(unlinked_days=config.unlinked_days, case_years=config.case_years)


async def gather_facts(conn: AsyncConnection, floor: dict[tuple[str, str], int] | None = None,
                       removed: set[tuple[str, str]] | None = None) -> dict[tuple[str, str], FootageFacts]:
    """The facts of every recording with stored footage."""
    recs = (await conn.execute(
        sa.select(entries.c.device_id, entries.c.recording_id, sa.func.min(entries.c.received_ms).label("first"))
        .where(entries.c.object_key.is_not(None))
        .group_by(entries.c.device_id, entries.c.recording_id))).all()
    steps = (await conn.execute(sa.select(case_steps.c.id, case_steps.c.case_id, case_steps.c.stage,
                                          case_steps.c.status, case_steps.c.actual_end_ms, case_steps.c.updated_ms,
                                          cases.c.major)
                                .join(cases, cases.c.id == case_steps.c.case_id))).all()
    life: dict[int, int | None] = {}
    for s in steps:
        end = (s.actual_end_ms or s.updated_ms) if s.status in _ENDED else None
        if s.case_id not in life:
            life[s.case_id] = end
        elif life[s.case_id] is not None:
            life[s.case_id] = None if end is None else max(end, life[s.case_id] or 0)
    step_of = {s.id: s for s in steps}
    # A signed-off major decision was taken on the case's footage: all of it is evidence of that decision.
    signed = set((await conn.execute(sa.select(review_signoffs.c.case_id))).scalars().all())
    links = (await conn.execute(sa.select(step_links.c.step_id, step_links.c.device_id, step_links.c.recording_id)
                                .where(step_links.c.removed_ms.is_(None)))).all()
    holds = (await conn.execute(sa.select(legal_holds.c.target, legal_holds.c.target_id)
                                .where(legal_holds.c.lifted_ms.is_(None)))).all()
    held_cases = {int(h.target_id) for h in holds if h.target == "case"}
    held_recs = {h.target_id for h in holds if h.target == "recording"}
    linked: dict[tuple[str, str], set[int]] = defaultdict(set)
    major: set[tuple[str, str]] = set()
    for link in links:
        step = step_of.get(link.step_id)
        if step is None:
            continue
        rec = (link.device_id, link.recording_id)
        linked[rec].add(step.case_id)
        if (step.major and step.stage == "decision") or step.case_id in signed:
            major.add(rec)
    facts = {}
    for r in recs:
        rec = (r.device_id, r.recording_id)
        case_ids = linked.get(rec, set())
        facts[rec] = FootageFacts(
            device_id=r.device_id, recording_id=r.recording_id, received_ms=r.first,
            cases=tuple(CaseLife(c, life.get(c)) for c in sorted(case_ids)),
            major_decision=rec in major,
            held=f"{r.device_id}/{r.recording_id}" in held_recs or bool(case_ids & held_cases),
            floor_ms=(floor or {}).get(rec), removed=rec in (removed or set()))
    return facts


class ExpiryJob:
    """The periodic duty: apply each recording's retention to the store, remove what expired."""

    def __init__(self, db: Database, clock: Clock, store: FootageStore, config: RetentionConfig) -> None:
        self.db = db
        self.clock = clock
        self.store = store
        self.policy = policy_of(config)
        self.removal_hooks: list[RemovalHook] = []
        #: Further copies of the footage (the second copy): an expired object leaves them too.
        self.copies: list[FootageStore] = []

    async def _state(self) -> tuple[dict[tuple[str, str], list[Any]], dict[str, Any]]:
        async with self.db.read() as conn:
            objs = (await conn.execute(sa.select(entries.c.device_id, entries.c.recording_id, entries.c.seq,
                                                 entries.c.object_key, entries.c.sha256, entries.c.stored_sha256,
                                                 entries.c.receipt)
                                       .where(entries.c.object_key.is_not(None))
                                       .order_by(entries.c.device_id, entries.c.seq))).all()
            kept = {r.object_key: r for r in (await conn.execute(sa.select(footage_retention))).all()}
        by_rec: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for o in objs:
            by_rec[(o.device_id, o.recording_id)].append(o)
        return by_rec, kept

    async def plan(self) -> dict[tuple[str, str], tuple[FootageFacts, Retention, bool]]:
        """Every recording's facts, retention and whether it expires now."""
        now = self.clock.now_ms()
        by_rec, kept = await self._state()
        floor: dict[tuple[str, str], int] = {}
        removed: set[tuple[str, str]] = set()
        for rec, objs in by_rec.items():
            rows = [kept[o.object_key] for o in objs if o.object_key in kept]
            untils = [r.retain_until_ms for r in rows if r.retain_until_ms is not None]
            if untils:
                floor[rec] = max(untils)
            if rows and len(rows) == len(objs) and all(r.removed_ms is not None for r in rows):
                removed.add(rec)
        async with self.db.read() as conn:
            facts = await gather_facts(conn, floor, removed)
        return {rec: (f, retention_for(f, self.policy), should_expire(f, now, self.policy))
                for rec, f in facts.items()}

    async def run(self) -> dict[str, int]:
        """One pass; counts of what it did."""
        now = self.clock.now_ms()
        by_rec, kept = await self._state()
        counts = {"recordings": 0, "removed": 0, "retained_by_store": 0, "extended": 0, "held": 0}
        for rec, (facts, retention, expire) in (await self.plan()).items():
            counts["recordings"] += 1
            for obj in by_rec.get(rec, []):
                row = kept.get(obj.object_key)
                if row is not None and row.removed_ms is not None:
                    continue
                if expire:
                    warrant = ExpiryWarrant(obj.object_key, _job=self)
                    if await self.store.remove_expired(obj.object_key, warrant):
                        for copy in self.copies:  # the primary decides; a copy's own lock may keep it longer
                            await copy.remove_expired(obj.object_key, warrant)
                        await self._record_removal(obj, retention, now)
                        counts["removed"] += 1
                    else:
                        counts["retained_by_store"] += 1
                    continue
                hold = facts.held or retention.klass == INDEFINITE
                if row is None or bool(row.indefinite) != hold:
                    await self.store.set_legal_hold(obj.object_key, hold)
                    counts["held"] += hold
                grew = retention.until_ms is not None and (row is None or row.retain_until_ms is None
                                                           or retention.until_ms > row.retain_until_ms)
                if grew and retention.until_ms is not None:
                    await self.store.extend_retention(obj.object_key, retention.until_ms)
                    counts["extended"] += 1
                if row is None or grew or bool(row.indefinite) != hold:
                    await self._remember(obj.object_key, retention, hold, now, row)
        return counts

    async def _remember(self, key: str, retention: Retention, hold: bool, now: int, row: Any) -> None:
        until = retention.until_ms
        if row is not None and row.retain_until_ms is not None:
            until = max(until or 0, row.retain_until_ms)  # retention only grows
        async with self.db.write() as conn:
            values = {"retain_until_ms": until, "indefinite": hold, "updated_ms": now}
            if not await insert_ignore(conn, footage_retention, {"object_key": key, **values}, ["object_key"]):
                await conn.execute(footage_retention.update().where(footage_retention.c.object_key == key)
                                   .values(**values))

    async def _record_removal(self, obj: Any, retention: Retention, now: int) -> None:
        receipt = bytes(obj.receipt) if obj.receipt is not None else b""
        removal = {"object_key": obj.object_key, "device_id": obj.device_id, "seq": obj.seq,
                   "recording_id": obj.recording_id, "sha256": obj.sha256,
                   "stored_sha256": obj.stored_sha256 or obj.sha256, "klass": retention.klass,
                   "retain_until_ms": retention.until_ms, "removed_ms": now, "receipt": receipt,
                   "receipt_sha256": hashlib.sha256(receipt).hexdigest()}
        async with self.db.write() as conn:
            values = {"retain_until_ms": retention.until_ms, "indefinite": False, "updated_ms": now,
                      "removed_ms": now, "removed_class": retention.klass, "removed_receipt": receipt or None}
            if not await insert_ignore(conn, footage_retention, {"object_key": obj.object_key, **values},
                                       ["object_key"]):
                await conn.execute(footage_retention.update()
                                   .where(footage_retention.c.object_key == obj.object_key).values(**values))
            for hook in self.removal_hooks:
                await hook(conn, removal)
        log.info("footage expired: %s (%s, retained until %s)", obj.object_key, retention.klass, retention.until_ms)


class HoldsService:
    """Legal holds on cases and recordings: set and lifted with a reason, never deleted.

    Both ends of a hold are leaves of the transparency log, appended in the transaction that
    records them: held footage never expires, so a lift that left no public trace could release
    footage silently.
    """

    def __init__(self, db: Database, clock: Clock, log: LogService) -> None:
        self.db = db
        self.clock = clock
        self.log = log

    async def set_hold(self, body: dict[str, Any], principal: Principal) -> dict[str, Any]:
        """Put a legal hold on a case or a recording."""
        target = body["target"]
        if target == "case":
            if body.get("case_id") is None:
                raise BadRequest("a case hold names case_id", code="missing_field", field="case_id")
            target_id = str(body["case_id"])
            async with self.db.read() as conn:
                if (await conn.execute(sa.select(cases.c.id).where(cases.c.id == body["case_id"]))).first() is None:
                    raise NotFound(f"no case {body['case_id']}", code="unknown_case")
        else:
            if not body.get("device_id") or not body.get("recording_id"):
                raise BadRequest("a recording hold names device_id and recording_id", code="missing_field")
            target_id = f"{body['device_id']}/{body['recording_id']}"
            async with self.db.read() as conn:
                found = (await conn.execute(sa.select(entries.c.seq).where(
                    entries.c.device_id == body["device_id"], entries.c.recording_id == body["recording_id"])
                    .limit(1))).first()
            if found is None:
                raise NotFound(f"no recording {target_id}", code="unknown_recording")
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            hold_id = (await conn.execute(legal_holds.insert().values(
                target=target, target_id=target_id, reason=body["reason"], set_ms=now,
                set_by=principal.actor).returning(legal_holds.c.id))).scalar_one()
            row = (await conn.execute(sa.select(legal_holds).where(legal_holds.c.id == hold_id))).one()
            index = await self._log(conn, row, "set", body["reason"], principal, now)
        return hold_json(row, {hold_subject(hold_id, "set"): index})

    async def lift(self, hold_id: int, reason: str, principal: Principal) -> dict[str, Any]:
        """Lift a hold (it stays on record with who, when and why)."""
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            row = (await conn.execute(sa.select(legal_holds).where(legal_holds.c.id == hold_id))).first()
            if row is None:
                raise NotFound(f"no legal hold {hold_id}", code="unknown_hold")
            if row.lifted_ms is not None:
                raise Conflict(f"legal hold {hold_id} was already lifted", code="hold_lifted")
            await conn.execute(legal_holds.update().where(legal_holds.c.id == hold_id).values(
                lifted_ms=now, lifted_by=principal.actor, lift_reason=reason))
            row = (await conn.execute(sa.select(legal_holds).where(legal_holds.c.id == hold_id))).one()
            await self._log(conn, row, "lift", reason, principal, now)
            indexes = await _hold_log_index(conn, [hold_id])
        return hold_json(row, indexes)

    async def _log(self, conn: AsyncConnection, row: Any, action: str, reason: str, principal: Principal,
                   now: int) -> int:
        """Append the hold leaf of ``action`` in the caller's transaction; its index."""
        if row.target == "case":
            case_id, device_id, recording_id = row.target_id, None, None
        else:
            device_id, _, recording_id = row.target_id.partition("/")
            case_id = None
        leaf = HoldLeaf(v=1, leaf="hold", hold_id=int(row.id), action=action, target=row.target, case_id=case_id,
                        device_id=device_id, recording_id=recording_id,
                        principal=await self.log.opaque_principal(conn, principal.actor),
                        role=principal.role.value, reason_sha256=text_sha256(reason), time_ms=now)
        return (await self.log.append(conn, leaf, hold_subject(int(row.id), action))).index

    async def list_holds(self, active_only: bool = False) -> list[dict[str, Any]]:
        """Every hold, newest first."""
        stmt = sa.select(legal_holds).order_by(legal_holds.c.id.desc())
        if active_only:
            stmt = stmt.where(legal_holds.c.lifted_ms.is_(None))
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
            indexes = await _hold_log_index(conn, [int(r.id) for r in rows])
        return [hold_json(r, indexes) for r in rows]

    async def target_of(self, hold_id: int) -> tuple[str, str] | None:
        """The hold's target (for scope checks)."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(legal_holds.c.target, legal_holds.c.target_id)
                                      .where(legal_holds.c.id == hold_id))).first()
        return None if row is None else (row.target, row.target_id)


def log_removals(log: LogService) -> RemovalHook:
    """The expiry job's hook that appends an expiry leaf for each removal, in the removal's transaction."""

    async def hook(conn: AsyncConnection, removal: dict[str, Any]) -> None:
        leaf = ExpiryLeaf(v=1, leaf="expiry", device_id=removal["device_id"], seq=int(removal["seq"]),
                          stored_sha256=removal["stored_sha256"], time_ms=removal["removed_ms"])
        appended = await log.append(conn, leaf, f"expiry:{removal['object_key']}")
        await conn.execute(footage_retention.update().where(footage_retention.c.object_key == removal["object_key"])
                           .values(log_index=appended.index))
        removal["log_index"] = appended.index

    return hook
