"""The audit of missing recordings: which steps that had to be recorded were not, or not fully.

The audit is computed from the records as they are now (steps, links, entries, assignments,
officers, sign-offs), never from a cache, so running it twice on the same data gives the same
report. Each finding has a code from protocol/findings.py, the code's severity, a subject and the
evidence that supports it. The checks, in the order of the report's sections:

(1) steps that must be recorded (requirement ``key`` or ``full``, status in progress or completed)
    with no linked chunk: ``step.missing_footage``;
(2) ``full`` steps whose window is not covered by verified, trusted chunks of linked recordings
    (clipped to each link's range and to the step's window): ``step.incomplete_coverage`` with
    the gap intervals;
(3) steps with linked chunks that are not verified: ``step.unverified_footage``;
(4) sequence numbers missing inside, or right after, a recording: ``chain.gap``;
(5) chunks announced longer ago than ``audit.pending_upload_s`` and still not verified:
    ``chunk.pending_upload``; (6) chunks that failed verification: ``chunk.verification_failed``;
(7) recordings linked to no step: ``recording.unlinked`` (with the steps they might belong to);
(8) devices not heard from for ``audit.offline_after_s`` with chunks not uploaded:
    ``device.offline_with_pending``;
(9) entries by an officer whose certificate had expired at the entry's time:
    ``officer.certificate_expired``; (10) entries naming another officer than the device's
    assignment at that time: ``officer.mismatch``; (11) entries after a trust cutoff:
    ``entry.untrusted``; (12) legal-review sign-offs with an override reason: ``review.override``.

Findings about recordings are grouped per recording (one finding lists the sequence numbers), so
a report stays readable when a whole recording is affected.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from custody.clock import Clock
from protocol import findings as F
from protocol.findings import FindingCode
from protocol.states import ChunkState
from server.config import AuditConfig
from server.db.database import Database
from server.db.schema import (
    assignments,
    case_steps,
    cases,
    devices,
    entries,
    officers,
    replicas,
    review_signoffs,
    step_links,
)
from server.errors import NotFound
from server.services.cases import CasesService, step_window
from server.services.replication import overdue

#: Codes that block a legal reviewer's sign-off unless an override reason is given.
FOOTAGE_CODES = (F.STEP_MISSING_FOOTAGE.code, F.STEP_INCOMPLETE_COVERAGE.code, F.STEP_UNVERIFIED_FOOTAGE.code)

_ACTIVE_STATUSES = ("in_progress", "completed")
_PENDING_STATES = (ChunkState.ANNOUNCED.value, ChunkState.UPLOADED.value)


@dataclass(frozen=True, slots=True)
class AuditFilters:
    """What the audit looks at; None means no restriction."""

    case_id: int | None = None
    officer_id: str | None = None
    device_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None

    def overlaps(self, start: int | None, end: int | None) -> bool:
        """True when [start, end) meets the filter's time range (no times: only without a time filter)."""
        if self.since_ms is None and self.until_ms is None:
            return True
        if start is None or end is None:
            return False
        return (self.until_ms is None or start < self.until_ms) and (self.since_ms is None or end > self.since_ms)

    def to_json(self) -> dict[str, Any]:
        """Report form."""
        return {"case_id": self.case_id, "officer_id": self.officer_id, "device_id": self.device_id,
                "since_ms": self.since_ms, "until_ms": self.until_ms}


@dataclass(slots=True)
class Recording:
    """The entries of one recording, in sequence order."""

    device_id: str
    recording_id: str
    rows: list[Any]

    @property
    def key(self) -> tuple[str, str]:
        """(device, recording)."""
        return self.device_id, self.recording_id

    @property
    def subject(self) -> str:
        """How findings name it."""
        return f"{self.device_id}/{self.recording_id}"

    @property
    def chunks(self) -> list[Any]:
        """Chunk entries."""
        return [r for r in self.rows if r.kind == "chunk"]

    @property
    def start_ms(self) -> int:
        """First instant (device clock)."""
        return int(min(r.time_ms for r in self.rows))

    @property
    def end_ms(self) -> int:
        """Last instant (device clock)."""
        return int(max(r.time_ms + (r.duration_ms or 0) for r in self.rows))

    @property
    def officers(self) -> list[str]:
        """Officers the entries name."""
        return sorted({r.officer_id for r in self.rows if r.officer_id is not None})


def merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of half-open intervals, sorted."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(i for i in intervals if i[0] < i[1]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def coverage_gaps(window: tuple[int, int], covered: list[tuple[int, int]],
                  tolerance_ms: int) -> tuple[int, list[tuple[int, int]]]:
    """Milliseconds of ``window`` covered, and the uncovered intervals longer than ``tolerance_ms``."""
    w0, w1 = window
    clipped = merge([(max(lo, w0), min(hi, w1)) for lo, hi in covered])
    gaps, cursor = [], w0
    for lo, hi in clipped:
        if lo > cursor:
            gaps.append((cursor, lo))
        cursor = max(cursor, hi)
    if cursor < w1:
        gaps.append((cursor, w1))
    covered_ms = sum(hi - lo for lo, hi in clipped)
    return covered_ms, [g for g in gaps if g[1] - g[0] > tolerance_ms]


def _finding(code: FindingCode, subject: str, evidence: dict[str, Any]) -> dict[str, Any]:
    return {"code": code.code, "severity": code.severity.label, "subject": subject, "evidence": evidence}


def _sort_key(f: dict[str, Any]) -> tuple[int, str, str, str]:
    return (-F.lookup(f["code"]).severity, f["code"], f["subject"], json.dumps(f["evidence"], sort_keys=True))


class AuditService:
    """Runs the audit."""

    def __init__(self, db: Database, clock: Clock, cases: CasesService, config: AuditConfig) -> None:
        self.db = db
        self.clock = clock
        self.cases = cases
        self.config = config
        #: (target name, delay ms) when a second copy is expected (replication.to): the audit reports
        #: verified chunks without a verified copy there after the delay.
        self.second_copy: tuple[str, int] | None = None

    async def run(self, filters: AuditFilters) -> dict[str, Any]:
        """The report: filters, thresholds, what was in scope, a summary, and the findings."""
        await self.cases.sync_auto_links()
        now = self.clock.now_ms()
        async with self.db.read() as conn:
            if filters.case_id is not None:
                exists = (await conn.execute(sa.select(cases.c.id).where(cases.c.id == filters.case_id))).first()
                if exists is None:
                    raise NotFound(f"no case {filters.case_id}", code="unknown_case")
            findings, scope = await self._run(conn, filters, now)
        findings.sort(key=_sort_key)
        by_code: dict[str, int] = defaultdict(int)
        for f in findings:
            by_code[f["code"]] += 1
        return {
            "generated_ms": now, "filters": filters.to_json(),
            "thresholds": {"pending_upload_s": self.config.pending_upload_s,
                           "offline_after_s": self.config.offline_after_s,
                           "coverage_tolerance_ms": self.config.coverage_tolerance_ms,
                           **({"second_copy_after_s": self.second_copy[1] // 1000} if self.second_copy else {})},
            "scope": scope, "summary": {"findings": len(findings), "by_code": dict(sorted(by_code.items()))},
            "findings": findings,
        }

    async def footage_findings(self, case_id: int) -> list[dict[str, Any]]:
        """The findings that block a legal sign-off of ``case_id`` (missing, incomplete, unverified footage)."""
        report = await self.run(AuditFilters(case_id=case_id))
        return [f for f in report["findings"] if f["code"] in FOOTAGE_CODES]

    # -- loading ---------------------------------------------------------------------------------------

    async def _run(self, conn: AsyncConnection, flt: AuditFilters, now: int) -> tuple[list[dict[str, Any]],
                                                                                       dict[str, int]]:
        case_rows = {r.id: r for r in (await conn.execute(sa.select(cases))).all()}
        all_steps = (await conn.execute(sa.select(case_steps).order_by(case_steps.c.id))).all()
        links = (await conn.execute(sa.select(step_links).where(step_links.c.removed_ms.is_(None)))).all()
        links_by_step: dict[str, list[Any]] = defaultdict(list)
        for link in links:
            links_by_step[link.step_id].append(link)

        def step_in_scope(step: Any) -> bool:
            if flt.case_id is not None and step.case_id != flt.case_id:
                return False
            if flt.officer_id is not None and flt.officer_id not in step.officers:
                return False
            if flt.device_id is not None and not any(lk.device_id == flt.device_id for lk in links_by_step[step.id]):
                return False
            window = step_window(step)
            return flt.overlaps(*(window or (None, None)))

        steps = [s for s in all_steps if step_in_scope(s)]
        linked_keys = {(lk.device_id, lk.recording_id) for s in steps for lk in links_by_step[s.id]}
        officer_rows = {r.id: r for r in (await conn.execute(sa.select(officers))).all()}

        # Recordings: those linked to the steps in scope, plus (without a case filter) every recording
        # the other filters select; with a case filter, recordings that might belong to its steps.
        keys = set(linked_keys)
        if flt.case_id is None:
            keys |= await self._recordings_matching(conn, flt)
        else:
            keys |= await self._candidates(conn, steps)
        recordings = await self._load(conn, keys)
        if flt.device_id is not None:
            recordings = {k: r for k, r in recordings.items() if k[0] == flt.device_id}
        device_ids = sorted({k[0] for k in recordings})
        assign_rows = (await conn.execute(sa.select(assignments).where(assignments.c.device_id.in_(device_ids))
                                          .order_by(assignments.c.from_ms))).all()
        assigns: dict[str, list[Any]] = defaultdict(list)
        for a in assign_rows:
            assigns[a.device_id].append(a)

        findings: list[dict[str, Any]] = []
        step_keys = self._check_steps(findings, steps, case_rows, links_by_step, recordings, now)
        linked_to: dict[tuple[str, str], list[str]] = defaultdict(list)
        for link in links:
            linked_to[(link.device_id, link.recording_id)].append(link.step_id)
        copied = await self._second_copies(conn, device_ids)
        for rec in recordings.values():
            self._check_recording(findings, rec, now, officer_rows, assigns[rec.device_id])
            self._check_second_copy(findings, rec, now, copied)
            if not linked_to.get(rec.key):
                suggested = self._suggested_steps(rec, steps, assigns[rec.device_id], case_rows)
                if flt.case_id is None or suggested:
                    findings.append(_finding(F.RECORDING_UNLINKED, rec.subject, {
                        "device_id": rec.device_id, "recording_id": rec.recording_id, "officers": rec.officers,
                        "start_ms": rec.start_ms, "end_ms": rec.end_ms, "chunks": len(rec.chunks),
                        "suggested_steps": suggested}))
        await self._check_gaps(conn, findings, recordings, flt)
        await self._check_devices(conn, findings, recordings, now)
        await self._check_overrides(conn, findings, steps, case_rows, flt)
        scope = {"cases": len({s.case_id for s in steps}), "steps": len(steps), "recordings": len(recordings),
                 "steps_requiring_footage": step_keys}
        return findings, scope

    async def _recordings_matching(self, conn: AsyncConnection, flt: AuditFilters) -> set[tuple[str, str]]:
        stmt = sa.select(entries.c.device_id, entries.c.recording_id).distinct()
        if flt.device_id is not None:
            stmt = stmt.where(entries.c.device_id == flt.device_id)
        if flt.until_ms is not None:
            stmt = stmt.where(entries.c.time_ms < flt.until_ms)
        if flt.since_ms is not None:
            stmt = stmt.where(entries.c.time_ms + sa.func.coalesce(entries.c.duration_ms, 0) > flt.since_ms)
        if flt.officer_id is not None:
            # Naming the officer, or recorded on a device assigned to the officer at the time.
            assigned = sa.exists().where(
                assignments.c.device_id == entries.c.device_id, assignments.c.officer_id == flt.officer_id,
                assignments.c.from_ms <= entries.c.time_ms,
                sa.or_(assignments.c.until_ms.is_(None), assignments.c.until_ms > entries.c.time_ms))
            stmt = stmt.where(sa.or_(entries.c.officer_id == flt.officer_id, assigned))
        return {(r.device_id, r.recording_id) for r in (await conn.execute(stmt)).all()}

    async def _candidates(self, conn: AsyncConnection, steps: list[Any]) -> set[tuple[str, str]]:
        from server.services.cases import suggest

        out: set[tuple[str, str]] = set()
        for step in steps:
            window = step_window(step)
            if window is not None and step.officers:
                out |= {(s["device_id"], s["recording_id"]) for s in await suggest(conn, None, list(step.officers),
                                                                                  window)}
        return out

    async def _second_copies(self, conn: AsyncConnection, device_ids: list[str]) -> set[tuple[str, int]]:
        if self.second_copy is None:
            return set()
        out: set[tuple[str, int]] = set()
        for i in range(0, len(device_ids), 500):
            out.update((r.device_id, r.seq) for r in (await conn.execute(
                sa.select(replicas.c.device_id, replicas.c.seq).where(
                    replicas.c.target == self.second_copy[0], replicas.c.device_id.in_(device_ids[i:i + 500])))))
        return out

    def _check_second_copy(self, findings: list[dict[str, Any]], rec: Recording, now: int,
                           copied: set[tuple[str, int]]) -> None:
        if self.second_copy is None:
            return
        target, delay_ms = self.second_copy
        missing = [c for c in rec.chunks if c.state == ChunkState.VERIFIED.value and c.verified_ms is not None
                   and overdue(c.verified_ms, now, delay_ms) and (c.device_id, c.seq) not in copied]
        if missing:
            findings.append(_finding(F.NO_SECOND_COPY, rec.subject, {
                "device_id": rec.device_id, "recording_id": rec.recording_id, "target": target,
                "seqs": [c.seq for c in missing], "oldest_verified_ms": min(c.verified_ms for c in missing),
                "threshold_s": delay_ms // 1000}))

    async def _load(self, conn: AsyncConnection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], Recording]:
        out: dict[tuple[str, str], Recording] = {}
        key_list = sorted(keys)
        for i in range(0, len(key_list), 500):  # bounded IN lists
            rows = (await conn.execute(sa.select(
                entries.c.device_id, entries.c.seq, entries.c.kind, entries.c.event, entries.c.recording_id,
                entries.c.officer_id, entries.c.case_step, entries.c.time_ms, entries.c.duration_ms, entries.c.state,
                entries.c.trusted, entries.c.received_ms, entries.c.verified_ms).where(
                sa.tuple_(entries.c.device_id, entries.c.recording_id).in_(key_list[i:i + 500]))
                .order_by(entries.c.device_id, entries.c.seq))).all()
            for r in rows:
                out.setdefault((r.device_id, r.recording_id), Recording(r.device_id, r.recording_id, [])).rows.append(r)
        return out

    # -- (1) (2) (3) steps ------------------------------------------------------------------------------

    def _linked_chunks(self, link: Any, rec: Recording | None) -> list[Any]:
        if rec is None:
            return []
        chunks = rec.chunks
        if link.source == "auto":
            chunks = [c for c in chunks if c.case_step == link.step_id]
        elif link.from_ms is not None:
            chunks = [c for c in chunks if c.time_ms < link.until_ms and c.time_ms + c.duration_ms > link.from_ms]
        return chunks

    def _check_steps(self, findings: list[dict[str, Any]], steps: list[Any], case_rows: dict[int, Any],
                     links_by_step: dict[str, list[Any]], recordings: dict[tuple[str, str], Recording],
                     now: int) -> int:
        requiring = 0
        for step in steps:
            if step.requirement == "none" or step.status not in _ACTIVE_STATUSES:
                continue
            requiring += 1
            case = case_rows[step.case_id]
            subject = f"{case.number} / {step.id}"
            base = {"case_id": case.id, "case_number": case.number, "step_id": step.id, "stage": step.stage,
                    "activity": step.activity, "requirement": step.requirement,
                    "policy_version": step.policy_version, "officers": list(step.officers)}
            linked: list[tuple[Any, Any]] = []  # (link, chunk)
            for link in sorted(links_by_step[step.id], key=lambda lk: lk.id):
                for chunk in self._linked_chunks(link, recordings.get((link.device_id, link.recording_id))):
                    linked.append((link, chunk))
            # (1)
            if not linked:
                findings.append(_finding(F.STEP_MISSING_FOOTAGE, subject, {
                    **base, "window_start_ms": step.actual_start_ms, "window_end_ms": step.actual_end_ms,
                    "links": len(links_by_step[step.id])}))
                continue
            # (3)
            unverified = [{"device_id": c.device_id, "recording_id": c.recording_id, "seq": c.seq, "state": c.state}
                          for _, c in linked if c.state != ChunkState.VERIFIED.value]
            if unverified:
                findings.append(_finding(F.STEP_UNVERIFIED_FOOTAGE, subject, {**base, "chunks": unverified}))
            # (2)
            window = (step.actual_start_ms, step.actual_end_ms if step.actual_end_ms is not None else now)
            if step.requirement == "full" and step.actual_start_ms is not None and window[1] > window[0]:
                covered = []
                for link, c in linked:
                    if c.state != ChunkState.VERIFIED.value or not c.trusted:
                        continue  # only footage that is evidence covers a step
                    lo, hi = c.time_ms, c.time_ms + c.duration_ms
                    if link.from_ms is not None:
                        lo, hi = max(lo, link.from_ms), min(hi, link.until_ms)
                    covered.append((lo, hi))
                covered_ms, gaps = coverage_gaps(window, covered, self.config.coverage_tolerance_ms)
                if gaps:
                    total = window[1] - window[0]
                    findings.append(_finding(F.STEP_INCOMPLETE_COVERAGE, subject, {
                        **base, "window_start_ms": window[0], "window_end_ms": window[1], "window_ms": total,
                        "covered_ms": covered_ms, "coverage_pct": round(100 * covered_ms / total, 2),
                        "gaps": [{"from_ms": lo, "until_ms": hi, "ms": hi - lo} for lo, hi in gaps]}))
        return requiring

    # -- (5) (6) (9) (10) (11) recordings -------------------------------------------------------------------

    def _check_recording(self, findings: list[dict[str, Any]], rec: Recording, now: int,
                         officer_rows: dict[str, Any], assigns: list[Any]) -> None:
        base = {"device_id": rec.device_id, "recording_id": rec.recording_id}
        horizon = now - self.config.pending_upload_s * 1000
        pending = [c for c in rec.chunks if c.state in _PENDING_STATES and c.received_ms <= horizon]
        if pending:
            findings.append(_finding(F.CHUNK_PENDING, rec.subject, {
                **base, "seqs": [c.seq for c in pending], "oldest_received_ms": min(c.received_ms for c in pending),
                "threshold_s": self.config.pending_upload_s}))
        failed = [c.seq for c in rec.chunks if c.state == ChunkState.REJECTED.value]
        if failed:
            findings.append(_finding(F.CHUNK_VERIFY_FAILED, rec.subject, {**base, "seqs": failed}))
        expired: dict[str, list[Any]] = defaultdict(list)
        mismatched: dict[tuple[str | None, str | None], list[int]] = defaultdict(list)
        for r in rec.rows:
            officer = officer_rows.get(r.officer_id) if r.officer_id is not None else None
            if officer is not None and officer.cert_expires_ms <= r.time_ms:
                expired[r.officer_id].append(r)
            assigned = next((a.officer_id for a in reversed(assigns) if a.from_ms <= r.time_ms
                             and (a.until_ms is None or a.until_ms > r.time_ms)), None)
            if r.officer_id != assigned:
                mismatched[(r.officer_id, assigned)].append(r.seq)
        for officer_id, rows in sorted(expired.items()):
            officer = officer_rows[officer_id]
            findings.append(_finding(F.OFFICER_CERT_EXPIRED, rec.subject, {
                **base, "officer_id": officer_id, "cert_number": officer.cert_number,
                "cert_expires_ms": officer.cert_expires_ms, "first_time_ms": min(r.time_ms for r in rows),
                "seqs": [r.seq for r in rows]}))
        for (named, assigned), seqs in sorted(mismatched.items(), key=lambda kv: kv[1][0]):
            findings.append(_finding(F.OFFICER_MISMATCH, rec.subject, {
                **base, "entry_officer": named, "assigned_officer": assigned, "seqs": seqs}))
        untrusted = [r.seq for r in rec.rows if not r.trusted]
        if untrusted:
            findings.append(_finding(F.ENTRY_UNTRUSTED, rec.subject, {**base, "seqs": untrusted}))

    def _suggested_steps(self, rec: Recording, steps: list[Any], assigns: list[Any],
                         case_rows: dict[int, Any]) -> list[dict[str, Any]]:
        out = []
        for step in steps:
            window = step_window(step)
            if window is None or not (rec.start_ms < window[1] and window[0] < rec.end_ms):
                continue
            by_assignment = {a.officer_id for a in assigns if a.from_ms < rec.end_ms
                             and (a.until_ms is None or a.until_ms > rec.start_ms)}
            if (by_assignment | set(rec.officers)) & set(step.officers):
                out.append({"case_number": case_rows[step.case_id].number, "step_id": step.id})
        return out

    # -- (4) chain gaps -----------------------------------------------------------------------------------

    async def _check_gaps(self, conn: AsyncConnection, findings: list[dict[str, Any]],
                          recordings: dict[tuple[str, str], Recording], flt: AuditFilters) -> None:
        by_device: dict[str, list[Recording]] = defaultdict(list)
        for rec in recordings.values():
            by_device[rec.device_id].append(rec)
        for device_id, recs in sorted(by_device.items()):
            seqs = sorted((await conn.execute(sa.select(entries.c.seq).where(
                entries.c.device_id == device_id))).scalars())
            present = set(seqs)
            for rec in recs:
                rec_seqs = [r.seq for r in rec.rows]
                lo, hi = min(rec_seqs), max(rec_seqs)
                # Missing inside the recording, or right after it up to the device's next entry:
                # a recording whose last chunks and stop never arrived ends in such a gap.
                following = next((s for s in seqs if s > hi), None)
                ranges: list[list[int]] = []
                missing = [s for s in range(lo, hi + 1) if s not in present]
                if following is not None and following > hi + 1:
                    missing += list(range(hi + 1, following))
                for s in missing:
                    if ranges and ranges[-1][1] == s - 1:
                        ranges[-1][1] = s
                    else:
                        ranges.append([s, s])
                for first, last in ranges:
                    findings.append(_finding(F.CHAIN_GAP, rec.subject, {
                        "device_id": device_id, "recording_id": rec.recording_id, "first": first, "last": last,
                        "count": last - first + 1, "position": "inside" if last < hi else "after"}))

    # -- (8) devices ------------------------------------------------------------------------------------------

    async def _check_devices(self, conn: AsyncConnection, findings: list[dict[str, Any]],
                             recordings: dict[tuple[str, str], Recording], now: int) -> None:
        # Only footage in scope counts: auditing one case must not report another case's missing chunks.
        pending: dict[str, list[int]] = defaultdict(list)
        for rec in recordings.values():
            pending[rec.device_id] += [c.seq for c in rec.chunks if c.state in _PENDING_STATES]
        if not any(pending.values()):
            return
        horizon = now - self.config.offline_after_s * 1000
        rows = (await conn.execute(sa.select(devices.c.id, devices.c.last_seen_ms).where(
            devices.c.id.in_([d for d, seqs in pending.items() if seqs])))).all()
        for row in rows:
            if row.last_seen_ms is not None and row.last_seen_ms > horizon:
                continue
            findings.append(_finding(F.DEVICE_OFFLINE_PENDING, row.id, {
                "device_id": row.id, "last_seen_ms": row.last_seen_ms, "pending_seqs": sorted(pending[row.id]),
                "offline_after_s": self.config.offline_after_s}))

    # -- (12) overrides -------------------------------------------------------------------------------------

    async def _check_overrides(self, conn: AsyncConnection, findings: list[dict[str, Any]], steps: list[Any],
                               case_rows: dict[int, Any], flt: AuditFilters) -> None:
        step_ids = {s.id for s in steps}
        rows = (await conn.execute(sa.select(review_signoffs).where(
            review_signoffs.c.override_reason.is_not(None)).order_by(review_signoffs.c.id))).all()
        for row in rows:
            if row.step_id not in step_ids or not flt.overlaps(row.created_ms, row.created_ms + 1):
                continue
            case = case_rows[row.case_id]
            findings.append(_finding(F.REVIEW_OVERRIDE, f"{case.number} / {row.step_id}", {
                "case_id": case.id, "case_number": case.number, "step_id": row.step_id, "reviewer": row.reviewer,
                "override_reason": row.override_reason, "signed_ms": row.created_ms,
                "blocking": [{"code": b["code"], "subject": b["subject"]} for b in row.blocking]}))
