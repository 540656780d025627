"""Findings: facts with evidence, each with a code from protocol/findings.py.

A finding is opened once (``dedup_key`` makes recording the same fact twice a no-op) and may be
closed later with a reason: a chain gap closes itself when the missing entry arrives. Findings
are never deleted.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from protocol.findings import FindingCode
from server.db.database import Database
from server.db.dialect import insert_ignore
from server.db.schema import findings


async def open_finding(
    conn: AsyncConnection,
    code: FindingCode,
    subject: str,
    message: str,
    evidence: dict[str, Any],
    now_ms: int,
    *,
    device_id: str | None = None,
    seq: int | None = None,
    dedup_key: str | None = None,
) -> bool:
    """Record a finding inside the caller's transaction; False when the same fact was already recorded."""
    values = {
        "code": code.code,
        "severity": code.severity.label,
        "subject": subject[:128],
        "device_id": device_id,
        "seq": seq,
        "dedup_key": dedup_key,
        "message": message[:1000],
        "evidence": evidence,
        "opened_ms": now_ms,
    }
    if dedup_key is None:
        await conn.execute(findings.insert().values(**values))
        return True
    return await insert_ignore(conn, findings, values, ["dedup_key"])


async def close_finding(conn: AsyncConnection, finding_id: int, now_ms: int, reason: str) -> None:
    """Close an open finding (it stays on record with when and why it closed)."""
    await conn.execute(
        findings.update()
        .where(findings.c.id == finding_id, findings.c.closed_ms.is_(None))
        .values(closed_ms=now_ms, closed_reason=reason[:200])
    )


def finding_json(row: Any) -> dict[str, Any]:
    """API form of a finding row."""
    return {
        "id": row.id,
        "code": row.code,
        "severity": row.severity,
        "subject": row.subject,
        "device_id": row.device_id,
        "seq": row.seq,
        "message": row.message,
        "evidence": row.evidence,
        "opened_ms": row.opened_ms,
        "closed_ms": row.closed_ms,
        "closed_reason": row.closed_reason,
    }


class FindingsService:
    """Queries over findings."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_findings(
        self, *, device_id: str | None = None, code: str | None = None, open_only: bool = False,
        after_id: int = 0, limit: int = 100, device_ids: set[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Findings, oldest first, filtered; page with ``after_id``."""
        stmt = sa.select(findings).where(findings.c.id > after_id).order_by(findings.c.id).limit(limit)
        if device_id is not None:
            stmt = stmt.where(findings.c.device_id == device_id)
        if code is not None:
            stmt = stmt.where(findings.c.code == code)
        if device_ids is not None:  # a caller scoped to some units sees their devices' findings only
            stmt = stmt.where(findings.c.device_id.in_(sorted(device_ids)))
        if open_only:
            stmt = stmt.where(findings.c.closed_ms.is_(None))
        async with self.db.read() as conn:
            return [finding_json(r) for r in (await conn.execute(stmt)).all()]
