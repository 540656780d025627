"""The legal-review gate (重大执法决定法制审核) as far as recordings go.

For a major case, the decision step cannot be completed without a legal reviewer's sign-off
(:meth:`server.services.cases.CasesService.update_step` checks for one). The reviewer "receives
the process records" (DESIGN.md), so a sign-off is refused while the audit shows missing,
incomplete or unverified footage for the case, unless the reviewer records an override reason.
An override is kept with the sign-off, recorded as a ``review.override`` finding, and reported by
every later audit of the case.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from custody.clock import Clock
from protocol import findings as F
from server.auth import Principal
from server.db.database import Database
from server.db.schema import review_signoffs
from server.errors import Conflict, Unprocessable
from server.services.audit import AuditService
from server.services.cases import CasesService, signoff_json
from server.services.findings import open_finding


class ReviewService:
    """Sign-offs of major decisions."""

    def __init__(self, db: Database, clock: Clock, cases: CasesService, audit: AuditService) -> None:
        self.db = db
        self.clock = clock
        self.cases = cases
        self.audit = audit

    async def sign_off(self, case_id: int, step_id: str, opinion: str, override_reason: str | None,
                       principal: Principal) -> dict[str, Any]:
        """Sign off a major case's decision step; refused while its footage is incomplete, unless overridden."""
        async with self.db.read() as conn:
            case, step = await self.cases._step(conn, case_id, step_id)
        if not case.major or step.stage != "decision":
            raise Unprocessable(f"step {step_id} is not the decision of a major case: there is nothing to sign off",
                                code="not_a_major_decision")
        if step.status in ("completed", "cancelled"):
            raise Conflict(f"step {step_id} is {step.status}", code="step_closed")
        if override_reason is not None and not override_reason.strip():
            raise Unprocessable("an override needs a reason", code="override_reason_empty")
        blocking = await self.audit.footage_findings(case_id)
        if blocking and override_reason is None:
            raise Conflict(f"the audit shows {len(blocking)} footage finding(s) for case {case.number}; sign off "
                           "only with an override reason", code="footage_incomplete",
                           findings=[{"code": b["code"], "subject": b["subject"]} for b in blocking])
        now = self.clock.now_ms()
        reason = override_reason if blocking else None  # an override of nothing is not an override
        async with self.db.write() as conn:
            result = await conn.execute(review_signoffs.insert().values(
                case_id=case_id, step_id=step_id, reviewer=principal.name, opinion=opinion, override_reason=reason,
                blocking=blocking, created_ms=now))
            new_id = result.inserted_primary_key[0]  # type: ignore[index]
            if reason is not None:
                await open_finding(
                    conn, F.REVIEW_OVERRIDE, f"case {case.number}",
                    f"{principal.name} signed off decision step {step_id} despite {len(blocking)} footage finding(s)",
                    {"case_id": case_id, "case_number": case.number, "step_id": step_id, "reviewer": principal.name,
                     "override_reason": reason, "blocking": [{"code": b["code"], "subject": b["subject"]}
                                                             for b in blocking]},
                    now, dedup_key=f"override:{new_id}")
            row = (await conn.execute(sa.select(review_signoffs).where(review_signoffs.c.id == new_id))).one()
        return signoff_json(row)
