"""The scrubber: re-verifies stored footage continuously, at a bounded rate, with a full decode.

The receipt is what proves what should be there: for every receipted chunk, in (device, seq)
order, the scrubber reads the object, compares its size and SHA-256 with the receipt's
``stored_sha256``, and decodes every frame (in the decoder's worker process, server/decoder.py,
whose CPU time counts in the budget below). A missing object is ``scrub.missing``, different
bytes are ``scrub.mismatch``, a decode failure is ``media.decode_failed``; each is a finding and
an error line in the server log. A cursor row in the database lets a restarted server (or another
process) continue where the last round stopped, and a pass that reaches the end starts again.

How much a round reads is a pure decision (:func:`plan_round`), tested without I/O: the rate
(bytes per second) times the interval, at least one chunk so that a chunk larger than a round's
budget is still checked. Bytes are not CPU: decoding every frame costs tens of milliseconds per
megabyte, so a round that took more than ``cpu_percent`` of a core over its interval is followed by
a pause that brings the average back to it (:func:`pause_after`): ingest shares that core. While
the process is busy (its event loop, or the whole process on the cores it may use, on the CPU more
than ``busy_percent`` of the time: ingest at full load), the average allowed is
``busy_cpu_percent`` instead (:func:`budget_percent`), decided again every interval of the pause:
receipts, which let devices free their storage, come before a re-check of footage already
receipted, and the scrubber catches up when the load falls.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from custody.clock import Clock
from protocol import findings as F
from protocol.envelope import Envelope
from protocol.messages import Receipt
from protocol.states import ChunkState
from server.config import ScrubConfig
from server.db.database import Database
from server.db.dialect import insert_ignore
from server.db.schema import entries, footage_retention, scrub_state
from server.decoder import Decoder
from server.services.access import AccessService
from server.services.findings import open_finding
from server.storage.base import FootageStore
from server.storage.grant import AccessGrant

log = logging.getLogger(__name__)
T = TypeVar("T")

OK, MISMATCH, MISSING, UNDECODABLE = "ok", "mismatch", "missing", "decode_failed"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A receipted chunk the scrubber may check next."""

    device_id: str
    seq: int
    size: int


def plan_round(candidates: Sequence[Candidate], budget_bytes: int) -> list[Candidate]:
    """The chunks one round checks: in order, until the budget is spent (always at least one)."""
    chosen: list[Candidate] = []
    spent = 0
    for c in candidates:
        if chosen and spent + c.size > budget_bytes:
            break
        chosen.append(c)
        spent += c.size
    return chosen


def pause_after(cpu_s: float, interval_s: float, cpu_percent: int) -> float:
    """Seconds to wait after a round that used ``cpu_s`` of CPU, beyond its interval, to average ``cpu_percent``."""
    return max(0.0, cpu_s * 100 / cpu_percent - interval_s)


def budget_percent(load: float, config: ScrubConfig) -> int:
    """The scrubber's CPU budget (percent of a core) at ``load`` (0 to 1: see :meth:`Scrubber.load`)."""
    return config.busy_cpu_percent if load * 100 > config.busy_percent else config.cpu_percent


def _cpu_mark() -> tuple[float, float, float]:
    """(this thread's CPU time, the process's CPU time, wall time), in seconds."""
    return time.thread_time(), time.process_time(), time.monotonic()


@dataclass(slots=True)
class ScrubReport:
    """What one round did."""

    checked: int = 0
    bytes: int = 0
    wrapped: bool = False
    results: dict[str, str] = field(default_factory=dict)  # "device/seq" -> result
    cpu_s: float = 0.0  # CPU time of the hashing (worker threads) and decoding (the decoder's worker process)


class Scrubber:
    """The periodic duty."""

    def __init__(self, db: Database, clock: Clock, store: FootageStore, config: ScrubConfig,
                 access: AccessService, decoder: Decoder | None = None) -> None:
        self.db = db
        #: Decodes every frame in a worker process (server/decoder.py), created unless given.
        self.decoder = decoder if decoder is not None else Decoder()
        self.clock = clock
        self.store = store
        self.config = config
        self.access = access
        self._grant: AccessGrant | None = None
        self._cpu_s = 0.0  # hashing (worker-thread CPU time) and decoding (the decoder worker's) so far
        #: The event loop's and the process's CPU time, and the wall time, when the load was last
        #: measured (reset by :meth:`start`, which runs on the loop).
        self._mark = _cpu_mark()
        #: The last budget applied (percent of a core), for stats and tests.
        self.budget_percent = config.cpu_percent

    async def start(self) -> None:
        """Record this process's integrity grant and make sure the cursor row exists."""
        self._grant = await self.access.duty_grant("scrub")
        self._mark = _cpu_mark()
        async with self.db.write() as conn:
            await insert_ignore(conn, scrub_state, {"id": 1, "device_id": None, "seq": None, "passes": 0,
                                                    "bytes_checked": 0, "updated_ms": self.clock.now_ms()}, ["id"])

    async def round(self) -> ScrubReport:
        """One round of the periodic duty: rate x interval bytes, then a pause if it took too much CPU
        (for the budget of the moment, decided again every interval of the pause)."""
        report = await self.run_once(self.config.rate_bytes_per_s * self.config.interval_s)
        interval = self.config.interval_s
        elapsed = float(interval)  # the periodic duty waited that long before the round
        while True:
            self.budget_percent = budget_percent(self.load(), self.config)
            pause = pause_after(report.cpu_s, elapsed, self.budget_percent)
            if pause <= 0:
                return report
            await asyncio.sleep(min(pause, interval))
            elapsed += min(pause, interval)

    def load(self) -> float:
        """How busy the process was since the last call (0 to 1): the larger of its event loop's
        share of the time on the CPU and the whole process's share of the cores it may use.

        Called on the event loop (the duty is a coroutine), so ``thread_time`` is the loop's own
        CPU, the one ingest's requests and messages run on. The process share also counts the
        worker threads (hashing, writing, decoding): on a server pinned to one core the loop
        itself may be on the CPU only half the time while the core is full.
        """
        now = _cpu_mark()
        (loop0, process0, wall0), (loop1, process1, wall1) = self._mark, now
        self._mark = now
        if wall1 <= wall0:
            return 0.0
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max((loop1 - loop0) / (wall1 - wall0), (process1 - process0) / ((wall1 - wall0) * cores))

    async def run_once(self, budget_bytes: int) -> ScrubReport:
        """Check the next chunks after the cursor within ``budget_bytes``.

        The round's chunks are claimed first: the cursor moves past them, under its row lock,
        before a byte is read. Processes sharing the database therefore check different chunks
        (reading the same ones twice doubled the reads and the decoding, and the configured rate
        with them); a process that dies mid-round leaves its claim for the next pass.
        """
        report = ScrubReport()
        cpu_before = self._cpu_s
        async with self.db.write() as conn:
            cursor = (await conn.execute(self.db.lock_device(sa.select(scrub_state).where(scrub_state.c.id == 1))
                      )).one()
            stmt = sa.select(entries.c.device_id, entries.c.seq, entries.c.size).where(
                entries.c.kind == "chunk", entries.c.state == ChunkState.VERIFIED.value,
                # Footage the expiry job removed is gone by design, not missing (server/services/expiry.py).
                ~sa.exists().where(footage_retention.c.object_key == entries.c.object_key,
                                   footage_retention.c.removed_ms.is_not(None)))
            if cursor.device_id is not None:
                stmt = stmt.where(sa.tuple_(entries.c.device_id, entries.c.seq) > (cursor.device_id, cursor.seq))
            rows = (await conn.execute(stmt.order_by(entries.c.device_id, entries.c.seq).limit(500))).all()
            plan = plan_round([Candidate(r.device_id, r.seq, int(r.size or 0)) for r in rows], budget_bytes)
            last = plan[-1] if plan else None
            report.wrapped = last is None or (len(rows) == len(plan) and len(rows) < 500)
            planned = sum(c.size for c in plan)
            values: dict[str, Any] = {"bytes_checked": scrub_state.c.bytes_checked + planned,
                                      "updated_ms": self.clock.now_ms()}
            if report.wrapped:  # the end of a pass: start again from the first chunk
                values.update(device_id=None, seq=None, passes=scrub_state.c.passes + 1)
            elif last is not None:
                values.update(device_id=last.device_id, seq=last.seq)
            await conn.execute(scrub_state.update().where(scrub_state.c.id == 1).values(**values))
        for c in plan:
            result = await self.check(c.device_id, c.seq)
            report.results[f"{c.device_id}/{c.seq}"] = result
            report.checked += 1
            report.bytes += c.size
        report.cpu_s = self._cpu_s - cpu_before
        return report

    async def check(self, device_id: str, seq: int) -> str:
        """Re-verify one receipted chunk against its receipt; record a finding when it fails."""
        if self._grant is None:
            raise RuntimeError("scrubber not started")
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(entries.c.object_key, entries.c.receipt, entries.c.size).where(
                entries.c.device_id == device_id, entries.c.seq == seq))).one()
        receipt = Receipt.peek(Envelope.from_bytes(bytes(row.receipt)))
        expected = receipt.stored_sha256
        stored = await self.store.get(row.object_key, self._grant)
        result, detail, actual = OK, "", None
        if stored is None:
            result, detail = MISSING, f"no object under {row.object_key}"
        else:
            data = stored.data
            actual = await asyncio.to_thread(self._timed, lambda: hashlib.sha256(data).hexdigest())
            if actual != expected or len(data) != row.size:
                result = MISMATCH
                detail = f"stored bytes ({len(data)} bytes) hash to {actual}; the receipt says {expected}"
            elif self.config.decode:
                decoded = await self.decoder.all_frames(data)
                self._cpu_s += decoded.cpu_s
                if decoded.error is not None:
                    result, detail = UNDECODABLE, decoded.error
        if result != OK:
            await self._finding(device_id, seq, result, detail, row.object_key, expected, actual)
        return result

    def _timed(self, work: Callable[[], T]) -> T:
        """Run ``work`` (in a worker thread) and add the thread's CPU time to the scrubber's."""
        start = time.thread_time()
        try:
            return work()
        finally:
            self._cpu_s += time.thread_time() - start

    async def _finding(self, device_id: str, seq: int, result: str, detail: str, key: str, expected: str | None,
                       actual: str | None) -> None:
        code = {MISSING: F.SCRUB_MISSING, MISMATCH: F.SCRUB_MISMATCH, UNDECODABLE: F.MEDIA_DECODE_FAILED}[result]
        log.error("SCRUB %s: device %s seq %s: %s", code.code, device_id, seq, detail)
        async with self.db.write() as conn:
            await open_finding(conn, code, device_id, f"seq {seq}: {detail}",
                               {"seq": seq, "object_key": key, "receipt_sha256": expected, "stored_sha256": actual},
                               self.clock.now_ms(), device_id=device_id, seq=seq,
                               dedup_key=f"scrub:{result}:{device_id}:{seq}:{actual}")
