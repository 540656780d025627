"""Ingest: entries announced, bytes stored, chunks verified, receipts signed.

This service is transport-independent: the HTTP handlers call it, and the MQTT handlers
(server/mqtt/handlers.py) call :meth:`IngestService.announce` with the same entry bytes they
receive on ``custody/v1/devices/{id}/entry`` (``source="mqtt"``). Whichever of the two paths
delivers an entry first wins; the other gets the same answer (idempotent). Every new receipt,
whichever path made it, goes to :attr:`IngestService.receipt_listeners` after its commit (the MQTT
side publishes it on the device's receipt topic).

Nothing here deletes or overwrites anything: an entry row, once written, only moves its state
forward (protocol/states.py), gains its receipt, or is marked untrusted; a different entry for a
used sequence number is refused and kept aside in ``conflicts`` as evidence.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from custody.clock import Clock
from protocol import findings as F
from protocol.chain import entry_hash
from protocol.envelope import Envelope
from protocol.errors import RemoteProtocolError, SignatureError
from protocol.keys import VerifyKey
from protocol.leaves import EntryLeaf
from protocol.messages import ChunkManifest, Receipt, RecordingEvent, parse_entry
from protocol.states import ChunkEvent, ChunkState, advance
from server.config import IngestConfig
from server.db.database import Database
from server.db.dialect import insert_ignore
from server.db.schema import conflicts, device_keys, device_states, devices, entries, findings
from server.decoder import Decoder
from server.errors import BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unprocessable
from server.keyring import ServerKeyring
from server.media import FirstFrame, MediaReport, check_chunk
from server.services.findings import close_finding, open_finding
from server.services.officers import assignment_and_cert, assignments_overlapping, in_force
from server.storage.base import (
    ContentMismatch,
    FootageStore,
    StoredObject,
    UploadTarget,
    conflict_key,
    is_valid_key,
    object_key,
)
from server.storage.grant import AccessGrant
from server.trust import entry_trusted
from server.verification import (
    FAIL,
    FINDING,
    PASS,
    PROVISIONAL,
    SKIPPED,
    STEP_BYTES,
    STEP_CHAIN,
    STEP_MEDIA,
    STEP_SIGNATURE,
    STEP_STORAGE,
    Checklist,
)

if TYPE_CHECKING:
    from server.log.service import LogService

log = logging.getLogger(__name__)

CHUNK, EVENT = "chunk", "event"

# -- the statements of the chunk path ----------------------------------------------------------
# Every chunk runs these, so they are built once: building a statement and its cache key cost
# about twice what running it does on SQLite (bench/RESULTS.md, "Ingest"). Bound names start
# with b_ because a bound name may not be a column's name in an INSERT or UPDATE, whose SET
# values come as execution parameters. FOR UPDATE renders as nothing on SQLite, whose writer
# queue serialises writers anyway.
_b = sa.bindparam

#: The device row (locked), the signing key the entry names (None columns when unknown) and the
#: device's state changes in order (one row each; None columns when it has none): one trip.
_DEVICE_KEY_STATES = (
    sa.select(devices.c.id, devices.c.highest_seq, device_keys.c.alg, device_keys.c.public_key,
              device_keys.c.retired_after_seq, device_states.c.state, device_states.c.cutoff_seq)
    .select_from(devices.outerjoin(device_keys, sa.and_(device_keys.c.device_id == devices.c.id,
                                                        device_keys.c.key_id == _b("b_key")))
                 .outerjoin(device_states, device_states.c.device_id == devices.c.id))
    .where(devices.c.id == _b("b_device"))
    .order_by(device_states.c.id)
    .with_for_update(of=devices)
)
_ENTRY = sa.select(entries).where(entries.c.device_id == _b("b_device"), entries.c.seq == _b("b_seq"))
#: A group's devices, locked in id order, with their keys and state changes (None columns when a
#: device has none): one row per (key, change) pair, a handful per device, in one trip.
_DEVICES_LOCKED = (
    sa.select(devices.c.id, devices.c.highest_seq, devices.c.receipted_seq, devices.c.last_seen_ms,
              device_keys.c.key_id, device_keys.c.retired_after_seq, device_states.c.id.label("change_id"),
              device_states.c.state, device_states.c.cutoff_seq)
    .select_from(devices.outerjoin(device_keys, device_keys.c.device_id == devices.c.id)
                 .outerjoin(device_states, device_states.c.device_id == devices.c.id))
    .where(devices.c.id.in_(_b("b_devices", expanding=True)))
    .order_by(devices.c.id, device_states.c.id)
    .with_for_update(of=devices)
)
#: A device's signing key by id (None columns when the device has no such key).
_DEVICE_KEY = (
    sa.select(devices.c.id, device_keys.c.alg, device_keys.c.public_key)
    .select_from(devices.outerjoin(device_keys, sa.and_(device_keys.c.device_id == devices.c.id,
                                                        device_keys.c.key_id == _b("b_key"))))
    .where(devices.c.id == _b("b_device"))
)
#: What new chunks delivered together need of their devices' chains: the entries at, before and
#: after their sequence numbers, and any claiming the same predecessor (a fork), in one trip.
_GROUP_NEIGHBOURS = sa.select(entries.c.device_id, entries.c.seq, entries.c.prev, entries.c.entry_hash).where(
    entries.c.device_id.in_(_b("b_devices", expanding=True)),
    sa.or_(entries.c.seq.in_(_b("b_seqs", expanding=True)), entries.c.prev.in_(_b("b_prevs", expanding=True))))
_ENTRIES_LOCKED = (sa.select(entries).where(sa.tuple_(entries.c.device_id, entries.c.seq).in_(
    _b("b_keys", expanding=True))).order_by(entries.c.device_id, entries.c.seq).with_for_update())
#: An entry with its signing key, and the entry before it (for the chain link): one trip.
_ENTRY_KEY_BEFORE = (
    sa.select(entries, device_keys.c.alg, device_keys.c.public_key)
    .select_from(entries.outerjoin(device_keys, sa.and_(device_keys.c.device_id == entries.c.device_id,
                                                        device_keys.c.key_id == entries.c.key_id)))
    .where(entries.c.device_id == _b("b_device"),
           sa.or_(entries.c.seq == _b("b_seq"), entries.c.seq == _b("b_before")))
)
_OPEN_GAPS = sa.select(findings.c.id, findings.c.evidence).where(
    findings.c.device_id == _b("b_device"), findings.c.code == F.CHAIN_GAP.code, findings.c.closed_ms.is_(None))
_UPDATE_DEVICE = devices.update().where(devices.c.id == _b("b_device"))
_UPDATE_ENTRY = entries.update().where(entries.c.device_id == _b("b_device"), entries.c.seq == _b("b_seq"))
_INSERT_ENTRY = entries.insert()
_DECODE_STATES = sa.select(entries.c.device_id, entries.c.seq, entries.c.object_key, entries.c.decode).where(
    sa.tuple_(entries.c.device_id, entries.c.seq).in_(_b("b_keys", expanding=True)))


#: Conclusions and new entries committed together at most (IngestService._enqueue). At 1,000 –
#: 1,200 devices groups of 64 were full at p90, so chunks waited for two groups; 128 cut the p99
#: at 1,200 devices by about a fifth (bench/RESULTS.md, eighth pass).
CONCLUDE_BATCH = 128
#: Device signing keys kept in memory (a key id names one public key for good: it is its fingerprint).
KNOWN_KEYS = 100_000
#: Entries remembered by hash for :meth:`IngestService.recent_repeat` (a few minutes of a large fleet).
RECENT_ENTRIES = 50_000

#: Most queued first-keyframe decodes that hold their sample in memory (tens of kilobytes each);
#: those queued beyond read the stored object when their turn comes.
DECODE_FRAMES_HELD = 2_000


@dataclass(frozen=True, slots=True)
class DecodeJob:
    """A verified chunk whose first keyframe is to be decoded, with its first video sample when
    ingest still held it (the bytes the store hashed before writing them)."""

    device_id: str
    seq: int
    frame: FirstFrame | None = None


@dataclass(slots=True)
class IngestResult:
    """What a device learns about one of its entries."""

    device_id: str
    seq: int
    kind: str
    entry_hash: str
    state: str
    trusted: bool
    created: bool = False
    upload: UploadTarget | None = None
    receipt: bytes | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: The server takes chunks with their manifest in one PUT (:meth:`IngestService.deliver`).
    direct_upload: bool = False
    #: When the receipt was made (server time, ms); None while there is none.
    verified_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        """API form; the receipt is the signed envelope's exact bytes as a string (they are ASCII JSON)."""
        return {
            "device_id": self.device_id,
            "seq": self.seq,
            "kind": self.kind,
            "entry_hash": self.entry_hash,
            "state": self.state,
            "trusted": self.trusted,
            "upload": self.upload.to_json() if self.upload else None,
            "receipt": self.receipt.decode("ascii") if self.receipt is not None else None,
            "verification": self.steps,
            "direct_upload": self.direct_upload,
        }


@dataclass(slots=True)
class _Conclusion:
    """A checked chunk waiting for its group's transaction."""

    row: Any
    steps: Checklist
    actual: str
    media_json: dict[str, Any] | None
    done: asyncio.Future[IngestResult]
    frame: FirstFrame | None = None  # the first video sample, for the decode after the receipt

    @property
    def key(self) -> tuple[str, int]:
        return self.row.device_id, self.row.seq

    @property
    def entry_hash(self) -> str:
        return str(self.row.entry_hash)

    def checks(self, row: Any) -> tuple[Checklist, str, dict[str, Any] | None]:
        """The checklist, the stored bytes' SHA-256 and the media report, for the locked ``row``."""
        return self.steps, self.actual, self.media_json


@dataclass(slots=True)
class _Delivery:
    """An entry, its signature checked, waiting for its group's transaction to record it: a chunk
    manifest announced (``body`` None) or delivered with its bytes, stored and checked (then the
    transaction records its receipt too), or a recording event (receipted at once)."""

    envelope: Envelope
    entry: ChunkManifest | RecordingEvent
    entry_hash: str
    alg: str
    public_key: bytes
    body: bytes | None
    report: MediaReport | None
    done: asyncio.Future[IngestResult]
    source: str = "http"
    #: The row as inserted, once its group has run (what :meth:`IngestService._after_conclusion` needs).
    row: Any = None

    @property
    def key(self) -> tuple[str, int]:
        return self.entry.device_id, self.entry.seq

    @property
    def frame(self) -> FirstFrame | None:
        """The first video sample the media check kept, for the decode after the receipt."""
        return self.report.first_frame if self.report is not None else None


class _Taken(Exception):
    """A delivered chunk's sequence number was taken before its group ran (its MQTT copy, or a
    retry of the same delivery): the request goes on as for an entry already stored."""


@dataclass(slots=True)
class _GroupDevice:
    """A device as a group's transaction found it (locked), and what the group changes on it."""

    id: str
    highest_seq: int | None
    receipted_seq: int | None
    last_seen_ms: int | None
    retired_after: dict[str, int | None]  # key id -> retired_after_seq
    changes: list[tuple[str, int | None]]  # (state, cutoff_seq), in order
    touched: bool = False


def _group_devices(rows: Sequence[Any]) -> dict[str, _GroupDevice]:
    """Fold :data:`_DEVICES_LOCKED`'s (key x change) rows into one :class:`_GroupDevice` each."""
    found: dict[str, _GroupDevice] = {}
    seen_changes: set[int] = set()
    for r in rows:
        dev = found.get(r.id)
        if dev is None:
            dev = found[r.id] = _GroupDevice(r.id, r.highest_seq, r.receipted_seq, r.last_seen_ms, {}, [])
        if r.key_id is not None:
            dev.retired_after[r.key_id] = r.retired_after_seq
        if r.change_id is not None and r.change_id not in seen_changes:
            seen_changes.add(r.change_id)
            dev.changes.append((r.state, r.cutoff_seq))
    return found


#: A chunk's conclusion: the checklist, the stored bytes' SHA-256 and the media report, for its locked row.
_Checks = Callable[[Any], tuple[Checklist, str, dict[str, Any] | None]]
#: What a group answers one of its chunks: (result, newly receipted), or the refusal.
_Outcome = tuple[IngestResult, bool] | Exception


@dataclass(slots=True)
class _Verified:
    """An entry a group verified; its receipt is signed once the group's verified entries are known."""

    slot: int  # its place in the group (and in the outcomes)
    row: Any  # the entry's row (a stand-in for a new entry)
    change: dict[str, Any]  # what the receipt changes in the row; a new entry's whole row
    created: bool  # a new entry: inserted with its receipt rather than updated


@dataclass(slots=True)
class _GroupTx:
    """One group transaction's working state: its connection, devices and what it has decided."""

    conn: AsyncConnection
    now: int
    devs: dict[str, _GroupDevice]
    outcomes: list[_Outcome]
    verified: list[_Verified] = field(default_factory=list)
    inserts: list[dict[str, Any]] = field(default_factory=list)  # new entries' rows

    def receipted(self, slot: int, row: Any, change: dict[str, Any], *, created: bool) -> None:
        """``row`` passed its checks: it gets its receipt with the group's others."""
        self.verified.append(_Verified(slot, row, change, created))


#: No assignment in force (and so no certificate to check), as :func:`assignment_and_cert` answers it.
_NO_ASSIGNMENT = SimpleNamespace(id=None, officer_id=None, cert_expires_ms=None, cert_number=None)

#: The outcome slot of a chunk whose receipt waits for the group's log append.
_UNLOGGED = RuntimeError("receipt not made yet")


def _parse(body: bytes) -> tuple[Envelope, ChunkManifest | RecordingEvent]:
    try:
        envelope = Envelope.from_bytes(body)
        return envelope, parse_entry(envelope)
    except SignatureError as exc:  # wrong payload type / algorithm: the message is malformed for us
        raise BadRequest(f"not a chain entry: {exc.message}", code=exc.code) from None


class IngestService:
    """Announce, upload, verify, receipt."""

    def __init__(self, db: Database, clock: Clock, keyring: ServerKeyring, store: FootageStore,
                 config: IngestConfig, decode_queue: asyncio.Queue[DecodeJob] | None = None,
                 decoder: Decoder | None = None) -> None:
        self.db = db
        #: Decodes first keyframes in worker processes (server/decoder.py), created unless given.
        self.decoder = decoder if decoder is not None else Decoder()
        self.clock = clock
        self.keyring = keyring
        self.store = store
        self.config = config
        self.decode_queue = decode_queue
        #: Called with (device id, signed receipt bytes) once a new receipt is committed; must not block.
        self.receipt_listeners: list[Callable[[str, bytes], None]] = []
        # Transparency log (issue 7), set by server.app at start-up: receipts carry log_index and
        # tree_size because the entry's leaf is appended in the transaction that accepts it.
        self.log: LogService | None = None
        # The integrity-duty access grant for reading stored bytes (server/services/access.py).
        self.read_grant: AccessGrant | None = None
        self._pending: list[_Conclusion | _Delivery] = []  # chunks waiting for a group transaction
        self._committer: asyncio.Task[None] | None = None
        self._keys: dict[tuple[str, str], tuple[str, bytes]] = {}  # (device, key id) -> (alg, public key)
        #: Entries committed recently by this process: entry hash -> (device id, seq, time of the
        #: receipt, or of the entry's storing while it has none).
        self._recent: collections.OrderedDict[str, tuple[str, int, int]] = collections.OrderedDict()
        #: How many groups of each size were committed (for tests and benchmarks).
        self.group_sizes: collections.Counter[int] = collections.Counter()

    def _receipted_now(self, device_id: str, receipt: bytes | None) -> None:
        if receipt is None:
            return
        for listener in self.receipt_listeners:
            try:
                listener(device_id, receipt)
            except Exception:  # a receipt is already committed and returned over HTTP; never fail for this
                log.exception("receipt listener failed")

    def _grant(self) -> AccessGrant:
        if self.read_grant is None:
            raise RuntimeError("ingest has no access grant: the server did not start its access log")
        return self.read_grant

    # -- (a) announce -----------------------------------------------------------------------

    async def announce(self, body: bytes, *, source: str, device_id: str | None = None) -> IngestResult:
        """Record a signed entry (chunk manifest or recording event) before any bytes arrive.

        ``device_id`` is the authenticated sender when there is one (HTTP): a device may only
        announce its own entries. Refused, with nothing stored: malformed entries, unknown devices
        or keys, bad signatures. A different entry for a used sequence number is refused as a
        conflict and kept aside as evidence. A manifest's answer carries its upload target; a
        recording event's carries its receipt at once.
        """
        envelope, entry = _parse(body)
        return await self._announce(envelope, entry, source=source, device_id=device_id)

    async def _announce(self, envelope: Envelope, entry: ChunkManifest | RecordingEvent, *, source: str,
                        device_id: str | None, taken: bool = False) -> IngestResult:
        """:meth:`announce` of an entry already parsed; ``taken``: the caller has read that a different
        entry holds its sequence number (the conflict is recorded one by one, not in a group)."""
        if device_id is not None and entry.device_id != device_id:
            raise Forbidden(f"entry names device {entry.device_id}, the request is signed by {device_id}",
                            code="wrong_device")
        kind = CHUNK if isinstance(entry, ChunkManifest) else EVENT
        if isinstance(entry, ChunkManifest) and entry.size > self.config.max_chunk_bytes:
            raise PayloadTooLarge(f"chunk of {entry.size} bytes exceeds the limit of {self.config.max_chunk_bytes}",
                                  code="chunk_too_large")
        h = entry_hash(envelope.raw)
        now = self.clock.now_ms()
        # Every entry comes twice (MQTT, and with its bytes over HTTP), and whichever is second is a
        # repeat: answered from a read, without the write transaction a new entry needs. The same
        # hash means the same signed bytes, whose signature was checked when they were stored.
        if not taken:
            # An entry is recorded, or found already recorded, in a group transaction shared with
            # the entries delivered, announced or concluded at the same moment (no read first); one
            # whose sequence number holds a different entry goes on below, which records the conflict.
            alg, public_key = await self._signing_key(entry.device_id, envelope.key_id)
            envelope.verify(VerifyKey(alg, public_key))
            try:
                grouped = await self._enqueue(_Delivery(envelope, entry, h, alg, public_key, None, None,
                                                        asyncio.get_running_loop().create_future(), source))
            except _Taken:
                pass
            else:
                if grouped.created and kind == CHUNK:  # an event is remembered with its receipt
                    self._remember(h, entry.device_id, entry.seq, None)
                return self._with_upload_target(grouped, entry, now)
        conflict: Conflict | None = None
        async with self.db.write() as conn:
            rows = (await conn.execute(_DEVICE_KEY_STATES, {"b_device": entry.device_id,
                                                            "b_key": envelope.key_id})).all()
            if not rows:
                raise NotFound(f"device {entry.device_id} is not enrolled", code="unknown_device")
            device = rows[0]
            if device.alg is None:
                raise SignatureError(f"key {envelope.key_id} is not a key of device {entry.device_id}",
                                     code="unknown_key")
            envelope.verify(VerifyKey(device.alg, bytes(device.public_key)))
            # The group found this sequence number taken (rows are never deleted): a repeat of the
            # same entry, or a different one, the conflict.
            existing = (await conn.execute(_ENTRY, {"b_device": entry.device_id, "b_seq": entry.seq})).one()
            if existing.entry_hash == h:
                await conn.execute(_UPDATE_DEVICE, {"b_device": device.id, "last_seen_ms": now})
                result = self._result(existing, created=False)
            else:
                conflict = await self._record_conflict(conn, envelope, entry, existing, now)
        if conflict is not None:
            raise conflict
        return self._with_upload_target(result, entry, now)

    def _remember(self, h: str, device_id: str, seq: int, verified_ms: int | None) -> None:
        """Note a committed entry (and its receipt's time) for :meth:`recent_repeat`."""
        self._recent[h] = (device_id, seq, verified_ms if verified_ms is not None else self.clock.now_ms())
        self._recent.move_to_end(h)
        if len(self._recent) > RECENT_ENTRIES:
            self._recent.popitem(last=False)

    def recent_repeat(self, device_id: str, body: bytes, resend_after_ms: int) -> bool:
        """True when ``body`` is exactly an entry of ``device_id`` this process stored moments ago and
        whose receipt, if it has one, is younger than ``resend_after_ms``.

        Every entry arrives twice (on MQTT, and with its bytes over HTTP); the second copy of one
        this process handled needs no parsing, no signature check and no database read to be
        recognised: the same hash is the same signed bytes. Anything else (another process's
        entry, an older one, a receipt old enough to send again) takes the full path; so does an
        entry stored here without a receipt ``resend_after_ms`` ago, which another process may
        have receipted since (the database then has the receipt to send again).
        """
        known = self._recent.get(entry_hash(body))
        if known is None or known[0] != device_id:
            return False
        return self.clock.now_ms() - known[2] < resend_after_ms

    def _with_upload_target(self, result: IngestResult, entry: ChunkManifest | RecordingEvent,
                            now: int) -> IngestResult:
        result.direct_upload = self.store.direct_upload
        if isinstance(entry, ChunkManifest) and result.state != ChunkState.VERIFIED:
            result.upload = self.store.upload_target(object_key(entry.device_id, entry.seq, entry.sha256),
                                                     entry.sha256, entry.size, now, self.config.upload_ttl_s)
        return result

    async def _record_conflict(self, conn: AsyncConnection, envelope: Envelope,
                               entry: ChunkManifest | RecordingEvent, existing: Any, now: int) -> Conflict:
        sha = entry.sha256 if isinstance(entry, ChunkManifest) else None
        h = entry_hash(envelope.raw)
        await insert_ignore(conn, conflicts, {
            "device_id": entry.device_id, "seq": entry.seq, "envelope": envelope.raw, "entry_hash": h,
            "sha256": sha, "received_ms": now}, ["entry_hash"])
        await open_finding(
            conn, F.CHUNK_CONFLICT, entry.device_id,
            f"a different entry was offered for seq {entry.seq}; the original {existing.entry_hash[:16]}… is kept",
            {"seq": entry.seq, "original_entry_hash": existing.entry_hash, "conflicting_entry_hash": h,
             "original_sha256": existing.sha256, "conflicting_sha256": sha},
            now, device_id=entry.device_id, seq=entry.seq, dedup_key=f"conflict:{h}")
        extra: dict[str, Any] = {"seq": entry.seq, "existing_entry_hash": existing.entry_hash}
        if isinstance(entry, ChunkManifest):
            # The conflicting body is evidence too: the device may hand it over, kept aside under conflicts/.
            extra["evidence_upload"] = self.store.upload_target(
                conflict_key(entry.device_id, entry.seq, entry.sha256), entry.sha256, entry.size, now,
                self.config.upload_ttl_s).to_json()
        return Conflict(f"seq {entry.seq} of device {entry.device_id} already holds a different entry; "
                        "the original is kept and this one is recorded as a conflict", code="chunk_conflict", **extra)

    def _result(self, row: Any, *, created: bool) -> IngestResult:
        return IngestResult(
            device_id=row.device_id, seq=row.seq, kind=row.kind, entry_hash=row.entry_hash, state=row.state,
            trusted=row.trusted, created=created, receipt=bytes(row.receipt) if row.receipt is not None else None,
            steps=list(row.verification or []), verified_ms=row.verified_ms)

    async def _untrusted(self, conn: AsyncConnection, entry: ChunkManifest | RecordingEvent, key_id: str,
                         now: int) -> None:
        await open_finding(conn, F.ENTRY_UNTRUSTED, entry.device_id,
                           f"seq {entry.seq} follows a trust cutoff of device {entry.device_id}",
                           {"seq": entry.seq, "key_id": key_id}, now, device_id=entry.device_id,
                           seq=entry.seq, dedup_key=f"untrusted:{entry.device_id}:{entry.seq}")

    async def _link_checks(self, conn: AsyncConnection, entry: ChunkManifest | RecordingEvent, h: str,
                           rows: Sequence[Any], now: int) -> tuple[tuple[str, str], Any]:
        """Link checks against ``rows``, the device's other entries at ``seq - 1`` and ``seq + 1`` and
        those claiming the same ``prev`` (others are ignored); returns step 3's outcome for this
        entry and the entry before it (None when absent)."""
        dev, seq = entry.device_id, entry.seq
        rows = [r for r in rows if r.seq != seq and (r.seq in (seq - 1, seq + 1) or r.prev == entry.prev)]
        before = next((r for r in rows if r.seq == seq - 1), None)
        after = next((r for r in rows if r.seq == seq + 1), None)
        sibling = min((r.seq for r in rows if r.prev == entry.prev), default=None)
        outcome: tuple[str, str]
        if seq == 0:
            outcome = (PASS, "first entry of the chain")
        elif before is None:
            outcome = (PROVISIONAL, f"seq {seq - 1} has not arrived yet (gap finding open)")
        elif before.entry_hash == entry.prev:
            outcome = (PASS, f"prev is the hash of seq {seq - 1}")
        else:
            outcome = (FINDING, f"prev is not the hash of seq {seq - 1}")
            await open_finding(conn, F.CHAIN_PREV_MISMATCH, dev,
                               f"seq {seq}: prev is not the hash of seq {seq - 1}",
                               {"seq": seq, "prev": entry.prev, "expected_prev": before.entry_hash}, now,
                               device_id=dev, seq=seq, dedup_key=f"prev:{dev}:{seq}")
        if after is not None and after.prev != h:
            await open_finding(conn, F.CHAIN_PREV_MISMATCH, dev, f"seq {seq + 1}: prev is not the hash of seq {seq}",
                               {"seq": seq + 1, "prev": after.prev, "expected_prev": h}, now,
                               device_id=dev, seq=seq + 1, dedup_key=f"prev:{dev}:{seq + 1}")
        if sibling is not None:
            await open_finding(conn, F.CHAIN_FORK, dev, f"seq {seq} and seq {sibling} follow the same entry",
                               {"seq": seq, "other_seq": sibling, "prev": entry.prev}, now,
                               device_id=dev, seq=seq, dedup_key=f"fork:{dev}:{entry.prev}:{seq}")
        return outcome, before

    async def _gaps(self, conn: AsyncConnection, device: Any, seq: int, now: int) -> None:
        """Open a gap finding for sequence numbers skipped; close (and split) the one ``seq`` fills."""
        dev, highest = device.id, device.highest_seq
        first_missing = 0 if highest is None else highest + 1
        if seq > first_missing:
            await self._open_gap(conn, dev, first_missing, seq - 1, now)
        elif highest is not None and seq <= highest:  # == when highest came from a signed status
            rows = (await conn.execute(_OPEN_GAPS, {"b_device": dev})).all()
            for row in rows:
                first, last = row.evidence["first"], row.evidence["last"]
                if first <= seq <= last:
                    await close_finding(conn, row.id, now, f"seq {seq} arrived")
                    if first < seq:
                        await self._open_gap(conn, dev, first, seq - 1, now)
                    if seq < last:
                        await self._open_gap(conn, dev, seq + 1, last, now)

    async def _open_gap(self, conn: AsyncConnection, dev: str, first: int, last: int, now: int) -> None:
        count = last - first + 1
        await open_finding(conn, F.CHAIN_GAP, dev,
                           f"seq {first}" + (f"..{last}" if last > first else "") + f" missing ({count} entries)",
                           {"first": first, "last": last}, now, device_id=dev, seq=first,
                           dedup_key=f"gap:{dev}:{first}-{last}")

    async def _officer_findings(self, conn: AsyncConnection, entry: ChunkManifest | RecordingEvent, time_ms: int,
                                found: Any, now: int) -> None:
        """Findings for an entry against ``found``, its :func:`assignment_and_cert` row."""
        assigned = found.officer_id
        if entry.officer_id != assigned:
            await open_finding(
                conn, F.OFFICER_MISMATCH, entry.device_id,
                f"seq {entry.seq} names officer {entry.officer_id}; the device was assigned to {assigned} then",
                {"seq": entry.seq, "entry_officer": entry.officer_id, "assigned_officer": assigned,
                 "time_ms": time_ms, "assignment_id": found.id},
                now, device_id=entry.device_id, seq=entry.seq, dedup_key=f"officer:{entry.device_id}:{entry.seq}")
        if entry.officer_id is not None and found.cert_expires_ms is not None and found.cert_expires_ms <= time_ms:
            await open_finding(
                conn, F.OFFICER_CERT_EXPIRED, entry.officer_id,
                f"seq {entry.seq} of device {entry.device_id} was recorded after certificate "
                f"{found.cert_number} expired",
                {"seq": entry.seq, "officer_id": entry.officer_id, "cert_expires_ms": found.cert_expires_ms,
                 "time_ms": time_ms}, now, device_id=entry.device_id, seq=entry.seq,
                dedup_key=f"cert:{entry.device_id}:{entry.seq}")

    async def _sign_receipts(self, conn: AsyncConnection, accepted: list[tuple[str, int, str, str, str | None]],
                             now: int) -> list[bytes]:
        """Log accepted entries ``(device, seq, entry hash, object key, stored sha256)`` and sign their receipts."""
        # -- transparency log (issue 7): log the accepted entries in this transaction, last, so the
        # sequencer lock is held only until the commit that follows.
        placed: list[tuple[int | None, int | None]] = [(None, None)] * len(accepted)
        if self.log is not None:
            appended = await self.log.append_many(conn, [
                (EntryLeaf(v=1, leaf="entry", device_id=device_id, seq=seq, entry_hash=h,
                           stored_sha256=stored_sha256, time_ms=now), f"entry:{device_id}:{seq}")
                for device_id, seq, h, _, stored_sha256 in accepted])
            placed = [(a.index, a.tree_size) for a in appended]
        # -- end transparency log
        return [self.keyring.sign(Receipt(
            v=1, device_id=device_id, seq=seq, entry_hash=h, object_key=key, stored_sha256=stored_sha256,
            server_time_ms=now, log_index=log_index, tree_size=tree_size,
            server_key_id=self.keyring.current.key_id)).raw
            for (device_id, seq, h, key, stored_sha256), (log_index, tree_size) in zip(accepted, placed, strict=True)]

    # -- (b) bytes through the server's own endpoint (local store) ------------------------------

    async def store_upload(self, key: str, sha256: str, size: int, body: bytes) -> dict[str, Any]:
        """Store bytes PUT to a local upload URL (authorization checked by the caller), then verify them.

        Refused with nothing stored: a body whose size or SHA-256 is not what the URL names. The
        bytes just stored are verified at once (the same checklist as :meth:`verify`), so the
        answer carries the receipt and the device needs no verify request: one request fewer per
        chunk, and the bytes are hashed once, as they are written, instead of read back and hashed
        again. A chunk that fails a step is answered ``rejected`` without a receipt (the finding is
        recorded); the device's verify request then gets the refusal with its steps.
        """
        if len(body) != size:
            raise BadRequest(f"body is {len(body)} bytes, the upload target is for {size}", code="size_mismatch")
        is_conflict = key.startswith("conflicts/")
        dev, seq_text, _ = key.removeprefix("conflicts/").split("/")
        seq = int(seq_text)
        async with self.db.read() as conn:
            if is_conflict:
                found = (await conn.execute(sa.select(conflicts.c.id).where(
                    conflicts.c.device_id == dev, conflicts.c.seq == seq, conflicts.c.sha256 == sha256))).first()
                row = before = None
            else:
                row, before = await self._entry_and_before(conn, dev, seq)
                found = row if row is not None and row.sha256 == sha256 else None
        if found is None:
            raise NotFound("no entry or conflict for this upload", code="unknown_entry")
        if not is_conflict:
            assert row is not None
            return await self._store_and_verify(row, before, body)
        written = await self._put(key, body, sha256)
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            await conn.execute(conflicts.update().where(conflicts.c.id == found.id,
                                                        conflicts.c.evidence_key.is_(None))
                               .values(evidence_key=key, evidence_stored_ms=now))
        return {"key": key, "stored": written, "state": "evidence"}

    async def deliver(self, device_id: str, seq: int, envelope_raw: bytes, body: bytes) -> dict[str, Any]:
        """A chunk's bytes with its signed manifest, in one request: announce, store, verify, receipt.

        The manifest is the credential (as on MQTT): it is signed by the device's key and names the
        body's SHA-256 and size, so only that device can have made the pair, and sending it again
        is harmless (the object key is content-derived; the same chunk gets the same receipt). An
        entry already stored under the same hash (its MQTT copy may have arrived first) is not
        verified again: the same hash is the same signed bytes. Refused with nothing stored: a
        malformed or forged manifest (401), one for another path (400), a body that is not the one
        the manifest names (400); a different manifest for a used sequence number is a conflict
        (409), kept aside as evidence like any other.

        A new chunk is recorded, verified and receipted in one transaction, shared with the other
        chunks delivered or concluded at the same moment (:meth:`_commit_group`).
        """
        envelope, entry = _parse(envelope_raw)
        if not isinstance(entry, ChunkManifest):
            raise BadRequest("the entry is a recording event, which has no bytes: announce it instead",
                             code="not_a_chunk")
        if (entry.device_id, entry.seq) != (device_id, seq):
            raise BadRequest(f"the manifest is for seq {entry.seq} of device {entry.device_id}, the path names "
                             f"seq {seq} of device {device_id}", code="entry_path_mismatch")
        if len(body) != entry.size:
            raise BadRequest(f"body is {len(body)} bytes, the manifest says {entry.size}", code="size_mismatch")
        h = entry_hash(envelope.raw)
        try:
            return await self._deliver_signed(envelope, entry, h, body)
        except _Taken:  # a different entry holds the sequence number, or this one came twice at once
            pass
        async with self.db.read() as conn:
            row, before = await self._entry_and_before(conn, device_id, seq)
        assert row is not None
        if row.entry_hash == h:
            return await self._store_and_verify(row, before, body)
        try:  # the conflict, recorded (409); the body is kept aside as its evidence
            await self._announce(envelope, entry, source="http", device_id=None, taken=True)
        except Conflict:
            await self.store_upload(conflict_key(device_id, seq, entry.sha256), entry.sha256, entry.size, body)
            raise
        raise AssertionError("a different entry for a used sequence number was not refused")  # pragma: no cover

    async def _deliver_signed(self, envelope: Envelope, entry: ChunkManifest, h: str, body: bytes
                              ) -> dict[str, Any]:
        """:meth:`deliver`: the signature, then the bytes, then the group's transaction.

        The bytes are stored only once the manifest is known to be the device's (so a forgery
        stores nothing), and before a new entry is: a crash between the two leaves bytes that the
        device's retry finds already there (the same content-derived key), never an entry whose
        bytes are missing. No read first: the group finds whether the entry is new, already
        stored (its MQTT copy came first: it is concluded there with these bytes), or whether a
        different entry holds its sequence number (raises :class:`_Taken`).
        """
        if entry.size > self.config.max_chunk_bytes:
            raise PayloadTooLarge(f"chunk of {entry.size} bytes exceeds the limit of {self.config.max_chunk_bytes}",
                                  code="chunk_too_large")
        try:
            alg, public_key = await self._signing_key(entry.device_id, envelope.key_id)
            envelope.verify(VerifyKey(alg, public_key))
        except (SignatureError, NotFound) as exc:
            raise _unauthorized(exc) from None
        key = object_key(entry.device_id, entry.seq, entry.sha256)
        written = await self._put(key, body, entry.sha256)
        # The media check reads only box headers and sample tables (well under a millisecond).
        report = check_chunk(body, entry, self.config.duration_tolerance_ms) if self.config.media_check else None
        pending = _Delivery(envelope, entry, h, alg, public_key, body, report,
                            asyncio.get_running_loop().create_future())
        answer: dict[str, Any] = {"key": key, "stored": written}
        try:
            result = await self._enqueue(pending)
        except Unprocessable:  # recorded (state rejected, finding open); the verify request explains
            return answer | {"state": ChunkState.REJECTED.value, "receipt": None}
        return answer | result.to_json()

    async def _signing_key(self, device_id: str, key_id: str) -> tuple[str, bytes]:
        """A device's key ``(alg, public key)`` by id; NotFound (``unknown_device``) or SignatureError
        (``unknown_key``) when there is none. Kept once read: a key id is its key's fingerprint, and
        keys are never deleted (whether an entry is trusted is decided by its group, under the lock)."""
        known = self._keys.get((device_id, key_id))
        if known is not None:
            return known
        async with self.db.read() as conn:
            row = (await conn.execute(_DEVICE_KEY, {"b_device": device_id, "b_key": key_id})).first()
        if row is None:
            raise NotFound(f"device {device_id} is not enrolled", code="unknown_device")
        if row.alg is None:
            raise SignatureError(f"key {key_id} is not a key of device {device_id}", code="unknown_key")
        if len(self._keys) >= KNOWN_KEYS:
            self._keys.clear()
        known = self._keys[(device_id, key_id)] = (row.alg, bytes(row.public_key))
        return known

    async def _put(self, key: str, body: bytes, sha256: str) -> bool:
        """Store ``body`` under ``key``; refused with nothing stored unless it hashes to ``sha256``."""
        try:
            # The store hashes the body in its worker thread before writing anything and refuses
            # it unless it is the SHA-256 the entry names: step (1) holds for exactly these bytes.
            return await self.store.put(key, body, sha256)
        except ContentMismatch:
            actual = await asyncio.to_thread(_sha256_hex, body)
            raise BadRequest("body does not match the SHA-256 of the upload target", code="content_hash_mismatch",
                             expected=sha256, actual=actual) from None

    async def _store_and_verify(self, row: Any, before: Any, body: bytes) -> dict[str, Any]:
        """Store an announced chunk's bytes and verify them at once; the answer carries the receipt."""
        written = await self._put(row.object_key, body, row.sha256)
        answer: dict[str, Any] = {"key": row.object_key, "stored": written}
        if row.state == ChunkState.VERIFIED:
            return answer | self._result(row, created=False).to_json()
        manifest = ChunkManifest.peek(Envelope.from_bytes(bytes(row.envelope)))
        # The media check reads only box headers and sample tables (well under a millisecond
        # for a chunk): cheaper here than a trip to a worker thread.
        report = (check_chunk(body, manifest, self.config.duration_tolerance_ms)
                  if self.config.media_check else None)
        steps, media_json = self._checklist(row, before, manifest, StoredObject(body), row.sha256, report)
        try:
            result = await self._conclude(row, steps, row.sha256, media_json, report)
        except Unprocessable:  # recorded (state rejected, finding open); the verify request explains
            return answer | {"state": ChunkState.REJECTED.value, "receipt": None}
        return answer | result.to_json()

    # -- (c) verification --------------------------------------------------------------------

    async def _entry_and_before(self, conn: AsyncConnection, device_id: str, seq: int) -> tuple[Any, Any]:
        """The entry (with its key's ``alg`` and ``public_key``) and the entry before it, each None if absent."""
        rows = (await conn.execute(_ENTRY_KEY_BEFORE, {"b_device": device_id, "b_seq": seq,
                                                       "b_before": seq - 1})).all()
        row = next((r for r in rows if r.seq == seq), None)
        before = next((r for r in rows if r.seq == seq - 1), None)
        return row, before

    async def verify(self, device_id: str, seq: int) -> IngestResult:
        """Verify a chunk's stored bytes and sign its receipt; the same chunk again gets the same receipt.

        (1) stored bytes' size and SHA-256 match the entry; (2) the entry's signature verifies
        with the device's enrolled key (trusted or not by its cutoff); (3) the chain link to the
        previous entry (a gap is provisional, not a refusal); (4) the cheap media check;
        (5) the stored object is write-once (S3 Object Lock in COMPLIANCE mode). Then the receipt.
        """
        async with self.db.read() as conn:
            row, before = await self._entry_and_before(conn, device_id, seq)
        if row is None:
            raise NotFound(f"no entry {seq} of device {device_id}", code="unknown_entry")
        if row.state == ChunkState.VERIFIED:
            return self._result(row, created=False)
        manifest = ChunkManifest.peek(Envelope.from_bytes(bytes(row.envelope)))
        stored = await self.store.get(row.object_key, self._grant())
        # (1)
        if stored is None:
            raise Conflict(f"the bytes of seq {seq} have not been uploaded yet", code="not_uploaded",
                           step=STEP_BYTES[0])
        # (1) and (4) read the same bytes: one trip to a worker thread for both (the media check
        # runs only when the bytes pass (1), as before).
        actual, report = await asyncio.to_thread(_hash_and_check, stored.data, manifest,
                                                 self.config.duration_tolerance_ms, self.config.media_check)
        steps, media_json = self._checklist(row, before, manifest, stored, actual, report)
        return await self._conclude(row, steps, actual, media_json, report)

    def _checklist(self, row: Any, before: Any, manifest: ChunkManifest, stored: StoredObject, actual: str,
                   report: MediaReport | None, *, signature_checked: bool = False
                   ) -> tuple[Checklist, dict[str, Any] | None]:
        """Steps (1) to (5) for ``stored``, whose bytes hash to ``actual``; ``report`` is step (4)'s check.

        ``signature_checked``: step (2) already held in this request, when the entry was stored
        (an Ed25519 verification is a tenth of a millisecond; every chunk would pay it twice)."""
        seq = row.seq
        steps = Checklist()
        # (1)
        if len(stored.data) != manifest.size:
            steps.add(STEP_BYTES, FAIL, f"stored object is {len(stored.data)} bytes, the entry says {manifest.size}")
        elif actual != manifest.sha256:
            steps.add(STEP_BYTES, FAIL, f"stored bytes hash to {actual}, the entry says {manifest.sha256}")
        elif stored.store_sha256 is not None and stored.store_sha256 != actual:
            steps.add(STEP_BYTES, FAIL, "the store's own checksum disagrees with the bytes it returned")
        else:
            steps.add(STEP_BYTES, PASS, f"{manifest.size} bytes, sha256 {actual[:16]}…")
        # (2)
        try:
            if row.alg is None:
                raise SignatureError(f"key {row.key_id} is not a key of device {row.device_id}", code="unknown_key")
            if not signature_checked:
                Envelope.from_bytes(bytes(row.envelope)).verify(VerifyKey(row.alg, bytes(row.public_key)))
            steps.add(STEP_SIGNATURE, PASS, f"key {row.key_id}" + ("" if row.trusted else
                                                                   "; entry is untrusted (after a trust cutoff)"))
        except RemoteProtocolError as exc:
            steps.add(STEP_SIGNATURE, FAIL, exc.message)
        # (3)
        if seq == 0:
            steps.add(STEP_CHAIN, PASS, "first entry of the chain")
        elif before is None:
            steps.add(STEP_CHAIN, PROVISIONAL, f"seq {seq - 1} has not arrived yet (gap finding open)")
        elif before.entry_hash == manifest.prev:
            steps.add(STEP_CHAIN, PASS, f"prev is the hash of seq {seq - 1}")
        else:
            steps.add(STEP_CHAIN, FINDING, f"prev is not the hash of seq {seq - 1} (finding chain.prev_mismatch)")
        # (4)
        media_json: dict[str, Any] | None = None
        if steps.failed is not None:
            steps.add(STEP_MEDIA, SKIPPED, "an earlier step failed")
        elif report is None:
            steps.add(STEP_MEDIA, SKIPPED, "media check disabled by configuration")
        else:
            media_json = report.to_json()
            if report.ok:
                steps.add(STEP_MEDIA, PASS, f"{report.video_frames} video samples, {report.audio_samples} audio "
                                            f"samples, {report.duration_ms} ms")
            else:
                steps.add(STEP_MEDIA, FAIL, "; ".join(report.problems))
        # (5)
        if not self.store.write_once:
            steps.add(STEP_STORAGE, SKIPPED, "local store: tamper-evident, not write-once (made read-only next)")
        elif stored.lock_mode != "COMPLIANCE" or stored.retain_until_ms is None:
            steps.add(STEP_STORAGE, FAIL, f"object lock is {stored.lock_mode!r}, COMPLIANCE required")
        else:
            steps.add(STEP_STORAGE, PASS, f"COMPLIANCE retention until {stored.retain_until_ms} ms")
        return steps, media_json

    async def _conclude(self, row: Any, steps: Checklist, actual: str, media_json: dict[str, Any] | None,
                        report: MediaReport | None) -> IngestResult:
        """Record a checklist's outcome: the receipt, or the rejection (raised as Unprocessable) and its finding."""
        return await self._enqueue(_Conclusion(row, steps, actual, media_json,
                                               asyncio.get_running_loop().create_future(),
                                               report.first_frame if report is not None else None))

    async def _enqueue(self, pending: _Conclusion | _Delivery) -> IngestResult:
        """Wait for ``pending``'s group to commit; its result, or its refusal raised.

        Conclusions and new deliveries are group-committed: those waiting when a transaction
        starts share it (one device lock, one log append and one statement per kind of write for
        them all), so the database work per chunk falls as load rises, and nothing waits for a
        group to fill when there is no load.
        """
        waiting = next((p for p in self._pending if p.key == pending.key and type(p) is type(pending)
                        and p.entry_hash == pending.entry_hash), None)
        if waiting is not None:  # the same chunk twice at once (a retry): one outcome answers both
            return await asyncio.shield(waiting.done)
        self._pending.append(pending)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_groups(), name="ingest-groups")
        return await pending.done

    async def _commit_groups(self) -> None:
        """Commit waiting conclusions and deliveries in groups until none wait; after each commit,
        the receipts go out."""
        batch: list[_Conclusion | _Delivery] = []
        try:
            while self._pending:
                batch = self._pending[:CONCLUDE_BATCH]
                del self._pending[:CONCLUDE_BATCH]
                self.group_sizes[len(batch)] += 1
                try:
                    outcomes = await self._commit_group(batch)
                except Exception as exc:
                    if len(batch) == 1:
                        outcomes = [exc]
                    else:  # one chunk's failure must not fail the others: each again, on its own
                        log.warning("group of %d chunks failed (%s); committing each alone", len(batch), exc)
                        outcomes = []
                        for one in batch:
                            try:
                                outcomes += await self._commit_group([one])
                            except Exception as exc1:
                                outcomes.append(exc1)
                for pending, outcome in zip(batch, outcomes, strict=True):
                    await self._after_conclusion(pending, outcome)
                batch = []
        except BaseException:  # cancelled (shutdown): nobody may wait for ever
            for pending in batch + self._pending:
                if not pending.done.done():
                    pending.done.cancel()
            self._pending.clear()
            raise

    async def _after_conclusion(self, pending: _Conclusion | _Delivery,
                                outcome: _Outcome) -> None:
        if isinstance(outcome, Exception):
            if not pending.done.done():
                pending.done.set_exception(outcome)
            return
        result, fresh = outcome
        if fresh:
            row = pending.row
            self._remember(row.entry_hash, row.device_id, row.seq, result.verified_ms)
            try:
                if row.kind == CHUNK:
                    await self.store.seal(row.object_key)
            except Exception as exc:  # committed and receipted; the request reports the failure
                log.exception("sealing %s failed", row.object_key)
                if not pending.done.done():
                    pending.done.set_exception(exc)
                return
            finally:
                self._receipted_now(row.device_id, result.receipt)
                if row.kind == CHUNK and self.decode_queue is not None and self.config.decode_after_receipt:
                    self.decode_queue.put_nowait(DecodeJob(row.device_id, row.seq, self._frame_to_hold(pending)))
        if not pending.done.done():
            pending.done.set_result(result)

    def _frame_to_hold(self, pending: _Conclusion | _Delivery) -> FirstFrame | None:
        """The chunk's first video sample, to decode without reading the object back; none held
        beyond :data:`DECODE_FRAMES_HELD` queued decodes (a backlog reads from the store)."""
        assert self.decode_queue is not None
        return pending.frame if self.decode_queue.qsize() < DECODE_FRAMES_HELD else None

    async def _commit_group(self, group: list[_Conclusion | _Delivery]) -> list[_Outcome]:
        """One transaction for ``group``: (result, newly receipted) or the refusal of each, in order.

        Locks in announce's order (devices, then entries, then the log's sequencer): taking a
        device only after the log append deadlocked with an event announced for the same device
        (which holds the device and waits for the sequencer). Devices in id order, so two groups
        never wait for each other in a circle.
        """
        async with self.db.write() as conn:
            devs = _group_devices((await conn.execute(_DEVICES_LOCKED, {
                "b_devices": sorted({p.key[0] for p in group})})).all())
            tx = _GroupTx(conn, self.clock.now_ms(), devs, [_UNLOGGED] * len(group))
            concluded: list[tuple[int, tuple[str, int], _Checks]] = [
                (i, p.key, p.checks) for i, p in enumerate(group) if isinstance(p, _Conclusion)]
            delivered = sorted(((i, p) for i, p in enumerate(group) if isinstance(p, _Delivery)),
                               key=lambda d: d[1].key)
            chains = await self._chains(conn, [d for _, d in delivered]) if delivered else {}
            new: list[tuple[int, _Delivery]] = []
            repeats: list[tuple[int, tuple[str, int]]] = []
            for slot, d in delivered:
                stored = next((r for r in chains[d.key[0]] if r.seq == d.entry.seq), None)
                if stored is None:
                    new.append((slot, d))
                elif stored.entry_hash == d.entry_hash and d.body is not None:
                    # Announced already (its MQTT copy came first): concluded with these bytes.
                    before = next((r for r in chains[d.key[0]] if r.seq == d.entry.seq - 1), None)
                    concluded.append((slot, d.key, functools.partial(self._delivered_checks, d, before)))
                elif stored.entry_hash == d.entry_hash:  # announced again: the entry as it is
                    repeats.append((slot, d.key))
                else:  # a different entry: the conflict is recorded one by one
                    tx.outcomes[slot] = _Taken()
            if repeats:
                current = {(r.device_id, r.seq): r for r in (await conn.execute(_ENTRIES_LOCKED, {
                    "b_keys": sorted({key for _, key in repeats})})).all()}
                for slot, key in repeats:
                    tx.outcomes[slot] = (self._result(current[key], created=False), False)
            if concluded:
                await self._conclude_rows(tx, concluded)
            if new:
                await self._accept_deliveries(tx, new, chains)
            if tx.verified:
                await self._receipt_verified(tx)
            if tx.inserts:
                await conn.execute(_INSERT_ENTRY, tx.inserts)
            touched = [{"b_device": d.id, "highest_seq": d.highest_seq, "receipted_seq": d.receipted_seq,
                        "last_seen_ms": d.last_seen_ms} for d in devs.values() if d.touched]
            if touched:
                await conn.execute(_UPDATE_DEVICE, touched)
        return tx.outcomes

    async def _receipt_verified(self, tx: _GroupTx) -> None:
        """Log the group's verified entries and sign their receipts; a new entry's row takes its
        receipt before the insert, a stored entry's row is updated here."""
        receipts = await self._sign_receipts(tx.conn, [
            (v.row.device_id, v.row.seq, v.row.entry_hash, v.row.object_key, v.change["stored_sha256"])
            for v in tx.verified], tx.now)
        updates = []
        for v, receipt in zip(tx.verified, receipts, strict=True):
            row, change = v.row, v.change
            change["receipt"] = receipt
            if not v.created:
                updates.append({"b_device": row.device_id, "b_seq": row.seq} | change)
            dev = tx.devs[row.device_id]
            if dev.receipted_seq is None or row.seq > dev.receipted_seq:
                dev.receipted_seq, dev.touched = row.seq, True
            tx.outcomes[v.slot] = (IngestResult(row.device_id, row.seq, row.kind, row.entry_hash, change["state"],
                                                row.trusted, created=v.created, receipt=receipt,
                                                steps=change["verification"], verified_ms=tx.now), True)
        if updates:
            await tx.conn.execute(_UPDATE_ENTRY, updates)

    async def _conclude_rows(self, tx: _GroupTx, concluded: list[tuple[int, tuple[str, int], _Checks]]) -> None:
        """A group's conclusions of stored entries, each ``(slot, key, checks)``: rejections are
        recorded here, the verified go to the group's receipts."""
        conn, now, outcomes = tx.conn, tx.now, tx.outcomes
        current = {(r.device_id, r.seq): r for r in (await conn.execute(_ENTRIES_LOCKED, {
            "b_keys": sorted(key for _, key, _ in concluded)})).all()}
        for slot, key, checks in concluded:
            row = current[key]
            if row.state == ChunkState.VERIFIED:  # another request won the race: the same receipt
                outcomes[slot] = (self._result(row, created=False), False)
                continue
            steps, actual, media_json = checks(row)
            verification = steps.to_json()
            if media_json is not None:
                verification.append({"media": media_json})
            state = ChunkState(row.state)
            if state in (ChunkState.ANNOUNCED, ChunkState.REJECTED):
                state = advance(state, ChunkEvent.UPLOAD)
            if steps.failed is None:
                tx.receipted(slot, row, {
                    "state": advance(state, ChunkEvent.VERIFY).value, "uploaded_ms": row.uploaded_ms or now,
                    "verified_ms": now, "stored_sha256": actual, "verification": verification}, created=False)
                continue
            await conn.execute(_UPDATE_ENTRY, {
                "b_device": row.device_id, "b_seq": row.seq, "state": advance(state, ChunkEvent.REJECT).value,
                "uploaded_ms": row.uploaded_ms or now, "verification": verification})
            outcomes[slot] = await self._rejected(conn, row.device_id, row.seq, steps, actual, now)

    def _delivered_checks(self, d: _Delivery, before: Any, row: Any) -> tuple[Checklist, str, dict[str, Any] | None]:
        """The checklist of a delivery's bytes for its entry already stored (``row``, locked)."""
        assert d.body is not None and isinstance(d.entry, ChunkManifest)
        d.row = row
        # The signature held for these very envelope bytes (the same hash) as the request began.
        keyed = SimpleNamespace(**row._mapping, alg=d.alg, public_key=d.public_key)
        steps, media_json = self._checklist(keyed, before, d.entry, StoredObject(d.body), d.entry.sha256, d.report,
                                            signature_checked=True)
        return steps, d.entry.sha256, media_json

    async def _chains(self, conn: AsyncConnection, delivered: list[_Delivery]) -> dict[str, list[Any]]:
        """Per device, its stored entries at, before and after the sequence numbers of ``delivered``
        and those claiming the same predecessors: one read."""
        device_ids = sorted({d.key[0] for d in delivered})
        seqs = sorted({s for d in delivered for s in (d.entry.seq - 1, d.entry.seq, d.entry.seq + 1)})
        chains: dict[str, list[Any]] = {dev: [] for dev in device_ids}
        for r in (await conn.execute(_GROUP_NEIGHBOURS, {"b_devices": device_ids, "b_seqs": seqs, "b_prevs": sorted(
                {d.entry.prev for d in delivered})})).all():
            chains[r.device_id].append(r)
        return chains

    async def _rejected(self, conn: AsyncConnection, device_id: str, seq: int, steps: Checklist, actual: str,
                        now: int) -> Unprocessable:
        """Record a failed checklist's finding; the refusal its request gets."""
        failed = steps.failed
        assert failed is not None
        await open_finding(conn, F.CHUNK_VERIFY_FAILED, device_id,
                           f"seq {seq} failed step ({failed.number}) {failed.title}: {failed.detail}",
                           {"seq": seq, "step": failed.number, "detail": failed.detail, "stored_sha256": actual},
                           now, device_id=device_id, seq=seq,
                           dedup_key=f"verify:{device_id}:{seq}:{actual}:{failed.number}")
        return Unprocessable(f"seq {seq} failed verification step ({failed.number}) {failed.title}: {failed.detail}",
                             code="verification_failed", step=failed.number, steps=steps.to_json())

    async def _accept_deliveries(self, tx: _GroupTx, delivered: list[tuple[int, _Delivery]],
                                 chains: dict[str, list[Any]]) -> None:
        """A group's new entries (in key order; ``chains`` from :meth:`_chains`), each checked as
        if stored one by one in sequence order, with one read of their assignments."""
        times = [d.entry.start_ms if isinstance(d.entry, ChunkManifest) else d.entry.time_ms for _, d in delivered]
        assignments = await assignments_overlapping(tx.conn, sorted({d.key[0] for _, d in delivered}),
                                                    min(times), max(times))
        for slot, d in delivered:
            await self._accept_delivery(tx, slot, d, chains[d.entry.device_id], assignments[d.entry.device_id])

    async def _accept_delivery(self, tx: _GroupTx, slot: int, d: _Delivery, chain: list[Any],
                               assignments: list[Any]) -> None:
        """One new entry of a group: the announce's checks (trust, chain, gaps, officer), then its
        receipt (an event), nothing more (an announced chunk) or the checklist of its bytes."""
        conn, now, entry, dev = tx.conn, tx.now, d.entry, tx.devs.get(d.key[0])
        if any(r.seq == entry.seq for r in chain):
            tx.outcomes[slot] = _Taken()  # by an earlier one of this group
            return
        if dev is None or d.envelope.key_id not in dev.retired_after:  # never: devices and keys stay
            tx.outcomes[slot] = Unauthorized(f"device {entry.device_id} has no key {d.envelope.key_id}",
                                             code="unknown_key")
            return
        trusted = entry_trusted(dev.changes, entry.seq, dev.retired_after[d.envelope.key_id])
        kind = CHUNK if isinstance(entry, ChunkManifest) else EVENT
        values = _entry_values(d.envelope, entry, kind, d.entry_hash, d.source, trusted, now)
        time_ms = values["time_ms"]
        link, before = await self._link_checks(conn, entry, d.entry_hash, chain, now)
        chain.append(SimpleNamespace(seq=entry.seq, prev=entry.prev, entry_hash=d.entry_hash))
        await self._gaps(conn, dev, entry.seq, now)
        if dev.highest_seq is None or entry.seq > dev.highest_seq:
            dev.highest_seq = entry.seq
        dev.last_seen_ms, dev.touched = now, True
        found = in_force(assignments, time_ms)
        if entry.officer_id is not None and (found is None or found.officer_id != entry.officer_id):
            found = await assignment_and_cert(conn, entry.device_id, time_ms, entry.officer_id)
        await self._officer_findings(conn, entry, time_ms, found or _NO_ASSIGNMENT, now)
        if not trusted:
            await self._untrusted(conn, entry, d.envelope.key_id, now)
        values.update(uploaded_ms=None, verification=None, verified_ms=None, stored_sha256=None, receipt=None)
        tx.inserts.append(values)  # the receipt, if any, goes into ``values`` before the insert
        if isinstance(entry, RecordingEvent):
            # A recording event has no bytes: signature and chain are all there is; it is receipted at once.
            steps = _event_checklist(d.envelope.key_id, trusted, link)
            values.update(state=ChunkState.VERIFIED.value, verified_ms=now, verification=steps.to_json())
            d.row = SimpleNamespace(**values | {"object_key": ""})  # a receipt names no object for an event
            tx.receipted(slot, d.row, values, created=True)
        elif d.body is None:  # announced: its bytes come later
            tx.outcomes[slot] = (IngestResult(entry.device_id, entry.seq, CHUNK, d.entry_hash, values["state"],
                                              trusted, created=True), False)
        else:
            await self._check_delivered(tx, slot, d, entry, values, before)

    async def _check_delivered(self, tx: _GroupTx, slot: int, d: _Delivery, entry: ChunkManifest,
                               values: dict[str, Any], before: Any) -> None:
        """A new chunk delivered with its bytes: the checklist, then its receipt or its rejection."""
        assert d.body is not None
        now = tx.now
        row = d.row = SimpleNamespace(**values | {"uploaded_ms": now}, alg=d.alg, public_key=d.public_key)
        steps, media_json = self._checklist(row, before, entry, StoredObject(d.body), entry.sha256, d.report,
                                            signature_checked=True)
        verification = steps.to_json() + ([{"media": media_json}] if media_json is not None else [])
        state = advance(ChunkState.ANNOUNCED, ChunkEvent.UPLOAD)
        values.update(uploaded_ms=now, verification=verification)
        if steps.failed is None:
            values.update(state=advance(state, ChunkEvent.VERIFY).value, verified_ms=now, stored_sha256=entry.sha256)
            tx.receipted(slot, row, values, created=True)
        else:
            values["state"] = advance(state, ChunkEvent.REJECT).value
            tx.outcomes[slot] = await self._rejected(tx.conn, entry.device_id, entry.seq, steps, entry.sha256, now)

    # -- reads -------------------------------------------------------------------------------

    async def entry(self, device_id: str, seq: int) -> IngestResult:
        """An entry's state, verification and receipt."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(entries).where(entries.c.device_id == device_id,
                                                               entries.c.seq == seq))).first()
        if row is None:
            raise NotFound(f"no entry {seq} of device {device_id}", code="unknown_entry")
        return self._result(row, created=False)

    async def device_entry(self, device_id: str, seq: int) -> IngestResult:
        """An entry as its device sees it: with a fresh upload target while its bytes are not verified."""
        result = await self.entry(device_id, seq)
        if result.kind == CHUNK and result.state != ChunkState.VERIFIED:
            async with self.db.read() as conn:
                row = (await conn.execute(sa.select(entries.c.sha256, entries.c.size).where(
                    entries.c.device_id == device_id, entries.c.seq == seq))).one()
            result.upload = self.store.upload_target(object_key(device_id, seq, row.sha256), row.sha256, row.size,
                                                     self.clock.now_ms(), self.config.upload_ttl_s)
        return result

    async def list_entries(self, device_id: str, from_seq: int, limit: int) -> list[dict[str, Any]]:
        """A device's entries from ``from_seq``, in sequence order (metadata, not envelopes)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(
                entries.c.seq, entries.c.kind, entries.c.event, entries.c.recording_id, entries.c.entry_hash,
                entries.c.state, entries.c.trusted, entries.c.officer_id, entries.c.case_step, entries.c.time_ms,
                entries.c.duration_ms, entries.c.sha256, entries.c.size, entries.c.received_ms,
                entries.c.verified_ms, entries.c.source, entries.c.decode,
            ).where(entries.c.device_id == device_id, entries.c.seq >= from_seq).order_by(entries.c.seq)
                .limit(limit))).all()
        return [dict(r._mapping) for r in rows]

    # -- after the receipt -------------------------------------------------------------------

    async def decode_one(self, device_id: str, seq: int) -> bool:
        """Decode a verified chunk's first keyframe; a failure becomes a media.decode_failed finding."""
        return (await self.decode_many([DecodeJob(device_id, seq)]))[0]

    async def decode_many(self, jobs: Sequence[DecodeJob]) -> list[bool]:
        """:meth:`decode_one` for several chunks, with one read and one write transaction for them all.

        The decodes themselves are the cost that cannot shrink; the transactions around them can:
        the decode worker takes whatever has queued up meanwhile. A job with its first sample held
        (``frame``) decodes that; the others read the stored object.
        """
        async with self.db.read() as conn:
            found = {(r.device_id, r.seq): r for r in (await conn.execute(_DECODE_STATES, {
                "b_keys": sorted({(j.device_id, j.seq) for j in jobs})})).all()}
        rows = [found.get((j.device_id, j.seq)) for j in jobs]
        due = [(job, row) for job, row in zip(jobs, rows, strict=True)
               if row is not None and row.decode is None and row.object_key is not None]
        # The held samples decode in one request to a decoder worker: one at a time, each decode
        # waited for the event loop to start the next, which under load left the decodes far behind.
        frames = [(i, job.frame) for i, (job, _) in enumerate(due) if job.frame is not None]
        errors = await self.decoder.first_frames([frame for _, frame in frames])
        held = {i: error for (i, _), error in zip(frames, errors, strict=True)}
        results: list[tuple[str, int, str, str | None]] = []  # device, seq, object key, error
        for i, (job, row) in enumerate(due):
            error = held[i] if i in held else await self._decode_first(row.object_key)
            results.append((job.device_id, job.seq, row.object_key, error))
        decoded = {(d, q): e is None for d, q, _, e in results}
        outcomes = [decoded.get((j.device_id, j.seq), row is not None and row.decode == "ok")
                    for j, row in zip(jobs, rows, strict=True)]
        if not results:
            return outcomes
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            # Rows in key order, as a group's transaction locks them: in the order of the receipts,
            # this update and a group taking two of its rows (a repeated entry) deadlocked.
            await conn.execute(_UPDATE_ENTRY, [{"b_device": d, "b_seq": q, "decode": "ok" if e is None else "failed"}
                                               for d, q, _, e in sorted(results, key=lambda r: (r[0], r[1]))])
            for device_id, seq, key, error in results:
                if error is not None:
                    await open_finding(conn, F.MEDIA_DECODE_FAILED, device_id, f"seq {seq}: {error}",
                                       {"seq": seq, "object_key": key, "error": error}, now,
                                       device_id=device_id, seq=seq, dedup_key=f"decode:{device_id}:{seq}")
        return outcomes

    async def _decode_first(self, key: str) -> str | None:
        """Decode the first keyframe of a stored object; why it failed, or None."""
        stored = await self.store.get(key, self._grant())
        if stored is None:
            return "object missing"
        return await self.decoder.first_frame_of(stored.data)

    async def pending_decodes(self, limit: int = 10_000, verified_before_ms: int | None = None
                              ) -> list[tuple[str, int]]:
        """Verified chunks not decoded yet (after a restart, the queue is rebuilt from these); with
        ``verified_before_ms``, only those verified before then (another process's lost queue)."""
        stmt = sa.select(entries.c.device_id, entries.c.seq).where(
            entries.c.kind == CHUNK, entries.c.state == ChunkState.VERIFIED.value, entries.c.decode.is_(None))
        if verified_before_ms is not None:
            stmt = stmt.where(entries.c.verified_ms < verified_before_ms)
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt.limit(limit))).all()
        return [(r.device_id, r.seq) for r in rows]


def _event_checklist(key_id: str, trusted: bool, chain: tuple[str, str]) -> Checklist:
    """A recording event's verification: it has no bytes, so signature and chain are all there is."""
    steps = Checklist()
    steps.add(STEP_BYTES, SKIPPED, "a recording event has no bytes")
    steps.add(STEP_SIGNATURE, PASS, f"key {key_id}" + ("" if trusted else "; untrusted (cutoff)"))
    steps.add(STEP_CHAIN, *chain)
    steps.add(STEP_MEDIA, SKIPPED, "a recording event has no media")
    steps.add(STEP_STORAGE, SKIPPED, "a recording event has no bytes")
    return steps


def _entry_values(envelope: Envelope, entry: ChunkManifest | RecordingEvent, kind: str, h: str, source: str,
                  trusted: bool, now: int) -> dict[str, Any]:
    """An entry's row as announced (its bytes not yet stored)."""
    values: dict[str, Any] = {
        "device_id": entry.device_id, "seq": entry.seq, "kind": kind, "payload_type": envelope.payload_type,
        "envelope": envelope.raw, "entry_hash": h, "prev": entry.prev, "key_id": envelope.key_id,
        "recording_id": entry.recording_id, "officer_id": entry.officer_id, "case_step": entry.case_step,
        "trusted": trusted, "source": source, "received_ms": now, "state": ChunkState.ANNOUNCED.value,
    }
    # Every key, whatever the kind: a group inserts its entries with one statement.
    if isinstance(entry, ChunkManifest):
        values.update(time_ms=entry.start_ms, duration_ms=entry.duration_ms, sha256=entry.sha256,
                      size=entry.size, object_key=object_key(entry.device_id, entry.seq, entry.sha256), event=None)
    else:
        values.update(time_ms=entry.time_ms, event=entry.event, duration_ms=None, sha256=None, size=None,
                      object_key=None)
    return values


def _unauthorized(exc: SignatureError | NotFound) -> Unauthorized | SignatureError | NotFound:
    """A manifest that does not authenticate its delivery is a 401; other errors pass unchanged."""
    if exc.code not in ("bad_signature", "unknown_key", "wrong_key", "unknown_device", "unsupported_algorithm"):
        return exc
    return Unauthorized(f"the manifest does not authenticate this upload: {exc.message}", code=exc.code)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hash_and_check(data: bytes, manifest: ChunkManifest, tolerance_ms: int, check_media: bool
                    ) -> tuple[str, MediaReport | None]:
    """Verification steps (1) and (4) in one worker-thread call: the SHA-256 of the stored bytes and,
    when they are what the entry says, the media check."""
    actual = _sha256_hex(data)
    if not check_media or actual != manifest.sha256 or len(data) != manifest.size:
        return actual, None
    return actual, check_chunk(data, manifest, tolerance_ms)


def check_upload_key(key: str) -> None:
    """Refuse keys the server never makes (path traversal, stray characters)."""
    if not is_valid_key(key):
        raise BadRequest("not an object key of this server", code="bad_object_key")

