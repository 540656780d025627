"""The access log (全过程记录信息调阅监督): every read of footage is recorded before a byte is served.

:meth:`AccessService.open` writes the access event (who, what, when, why) and appends its leaf to
the transparency log in one transaction, and only after that commits does it return the
:class:`~server.storage.grant.AccessGrant` a store requires for reading. So a view, a download,
an export or a live view that was served is always on record, and a supervisor or auditor can
query the record by user, device, case and time.

The server's own integrity duties (ingest verification, first-frame decode, the scrubber) read
footage too, though nobody sees it: each gets one grant per process start, recorded as an
``integrity`` access event, so even those reads carry an access-event id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from custody.clock import Clock
from protocol.leaves import AccessLeaf, keys_sha256, text_sha256
from server.auth import Principal
from server.db.database import Database
from server.db.schema import access_events
from server.errors import BadRequest
from server.log.service import LogService
from server.storage.grant import MINT, AccessGrant

KINDS = ("view", "live_view", "download", "export", "integrity")
MIN_REASON, MAX_REASON = 4, 500


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is reading, as the access log records it."""

    actor: str  # user:NAME, device:ID, duty:NAME (the access_events table, for supervisors)
    principal_id: str  # the opaque id the public log leaf carries (user:17, never a name)
    role: str | None

    @classmethod
    def of(cls, principal: Principal) -> Reader:
        """The reader behind an authenticated request."""
        if principal.kind == "user":
            return cls(principal.actor, f"user:{principal.user_id}", principal.role.value)
        return cls(principal.actor, principal.actor, principal.role.value)


def check_reason(reason: str | None) -> str:
    """A reason is required and must say something (4 to 500 characters, no control characters)."""
    text = (reason or "").strip()
    if len(text) < MIN_REASON:
        raise BadRequest("reading footage needs a reason (at least 4 characters)", code="reason_required")
    if len(text) > MAX_REASON or any(ord(c) < 0x20 for c in text):
        raise BadRequest("a reason is at most 500 characters, without control characters", code="bad_reason")
    return text


class AccessService:
    """Records accesses and mints the grants stores require."""

    def __init__(self, db: Database, clock: Clock, log: LogService) -> None:
        self.db = db
        self.clock = clock
        self.log = log

    async def open(self, reader: Reader, kind: str, object_keys: list[str], reason: str | None, *,
                   device_id: str | None = None, recording_id: str | None = None,
                   case_id: str | None = None) -> AccessGrant:
        """Record an access and log it; return the grant for exactly ``object_keys``."""
        if kind not in KINDS:
            raise ValueError(f"unknown access kind {kind!r}")
        text = check_reason(reason)
        keys = sorted(set(object_keys))
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            inserted = await conn.execute(access_events.insert().values(
                kind=kind, actor=reader.actor[:100], principal_id=reader.principal_id, role=reader.role,
                device_id=device_id, recording_id=recording_id, case_id=case_id, object_keys=keys, reason=text,
                created_ms=now))
            assert inserted.inserted_primary_key is not None
            access_id = int(inserted.inserted_primary_key[0])
            leaf = AccessLeaf(v=1, leaf="access", access_id=access_id, kind=kind, principal=reader.principal_id,
                              device_id=device_id, recording_id=recording_id, case_id=case_id, objects=len(keys),
                              objects_sha256=keys_sha256(keys), reason_sha256=text_sha256(text), time_ms=now)
            appended = await self.log.append(conn, leaf, f"access:{access_id}")
            await conn.execute(access_events.update().where(access_events.c.id == access_id).values(
                log_index=appended.index))
        # Committed: the access is on record before the caller can read a byte.
        return AccessGrant(MINT, access_id, kind, frozenset(keys) if kind != "integrity" else None)

    async def duty_grant(self, duty: str) -> AccessGrant:
        """A grant for one of the server's integrity duties (reads every object; recorded once per start)."""
        return await self.open(Reader(f"duty:{duty}", f"duty:{duty}", None), "integrity", [],
                               f"server duty {duty}: integrity checks, nothing is shown to anyone")

    async def query(self, *, actor: str | None = None, device_id: str | None = None, case_id: str | None = None,
                    kind: str | None = None, from_ms: int | None = None, to_ms: int | None = None,
                    after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Access events, oldest first, filtered; page with ``after_id``."""
        c = access_events.c
        stmt = sa.select(access_events).where(c.id > after_id).order_by(c.id).limit(limit)
        for column, value in ((c.actor, actor), (c.device_id, device_id), (c.case_id, case_id), (c.kind, kind)):
            if value is not None:
                stmt = stmt.where(column == value)
        if from_ms is not None:
            stmt = stmt.where(c.created_ms >= from_ms)
        if to_ms is not None:
            stmt = stmt.where(c.created_ms < to_ms)
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [access_json(r) for r in rows]

    async def for_objects(self, object_keys: list[str], limit: int = 10_000) -> list[dict[str, Any]]:
        """Access events that covered any of ``object_keys`` (an export's access-log excerpt)."""
        wanted = set(object_keys)
        out: list[dict[str, Any]] = []
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(access_events).where(access_events.c.kind != "integrity")
                                       .order_by(access_events.c.id).limit(limit))).all()
        for r in rows:
            if wanted & set(r.object_keys or []):
                out.append(access_json(r))
        return out


def access_json(row: Any) -> dict[str, Any]:
    """API form of an access event."""
    return {"id": row.id, "kind": row.kind, "actor": row.actor, "principal_id": row.principal_id, "role": row.role,
            "device_id": row.device_id, "recording_id": row.recording_id, "case_id": row.case_id,
            "objects": len(row.object_keys or []), "object_keys": list(row.object_keys or []),
            "reason": row.reason, "time_ms": row.created_ms, "log_index": row.log_index}
