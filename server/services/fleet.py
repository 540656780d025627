"""The fleet: what each device says about itself (signed status, availability) and what the server sees.

A signed :class:`~protocol.messages.DeviceStatus` is checked like any device message: (1) a
well-formed envelope holding a status, (2) naming the device whose topic carried it, (3) of an
enrolled device, (4) signed by that device's current key. A status older (by the device clock)
than the latest one recorded changes nothing, so a replayed status cannot roll the view back.

Continuity (DESIGN.md): the status carries the last sequence number the device committed. When it
is above every entry the server has, the missing numbers become a provisional ``chain.gap``
finding at once, and ``devices.highest_seq`` moves up to it, so that ingest closes (and splits)
the gap as the entries arrive, exactly as for a gap seen between entries (ChainTracker's
``note_status`` semantics). A status whose head hash differs from the entry the server holds at
that sequence is a ``chain.seq_reuse`` finding.

Availability is the retained ``online``/``offline`` message (``offline`` is the device's last
will). It is unsigned: only the broker's ACL protects it, so it drives the fleet view and
command re-delivery, never evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from custody.clock import Clock
from protocol import findings as F
from protocol.envelope import Envelope
from protocol.errors import SignatureError
from protocol.keys import VerifyKey
from protocol.messages import DeviceStatus
from protocol.states import ChunkState
from protocol.topics import OFFLINE, ONLINE
from server.db.database import Database
from server.db.schema import device_health, device_keys, devices, entries, findings
from server.errors import BadRequest, Forbidden, NotFound
from server.services.findings import close_finding, open_finding

log = logging.getLogger(__name__)

# Every device sends a status every status_interval_s (30 s by default): a fleet of hundreds sends
# several a second, so the statements of that path are built once (building one costs about twice
# what running it does) and the device, its current key and its health row come in one trip.
_b = sa.bindparam
#: The device (locked) with its key and health row, the hash of the entry it holds at the status's
#: ``last_seq`` (``b_last``; None when absent) and whether a clock-skew finding is open: one trip.
_STATUS_DEVICE = (
    sa.select(devices.c.id, devices.c.key_id, devices.c.highest_seq, device_keys.c.alg, device_keys.c.public_key,
              device_health.c.device_id.label("health_of"), device_health.c.status_time_ms,
              sa.select(entries.c.entry_hash).where(entries.c.device_id == devices.c.id,
                                                    entries.c.seq == _b("b_last")).scalar_subquery().label("held"),
              sa.exists().where(findings.c.device_id == devices.c.id, findings.c.code == F.DEVICE_CLOCK_SKEW.code,
                                findings.c.closed_ms.is_(None)).label("skew_open"))
    .select_from(devices.outerjoin(device_keys, sa.and_(device_keys.c.device_id == devices.c.id,
                                                        device_keys.c.key_id == devices.c.key_id))
                 .outerjoin(device_health, device_health.c.device_id == devices.c.id))
    .where(devices.c.id == _b("b_device"))
    .with_for_update(of=devices)
)
_INSERT_HEALTH = device_health.insert()
_UPDATE_HEALTH = device_health.update().where(device_health.c.device_id == _b("b_device"))
_DEVICE_SEEN = devices.update().where(devices.c.id == _b("b_device"))
_OPEN_SKEW = sa.select(findings.c.id).where(findings.c.device_id == _b("b_device"),
                                            findings.c.code == F.DEVICE_CLOCK_SKEW.code, findings.c.closed_ms.is_(None))


@dataclass(frozen=True, slots=True)
class StatusOutcome:
    """What recording one status did."""

    device_id: str
    recorded: bool  # False: older than the status already recorded
    gap: tuple[int, int] | None  # a gap opened from the status's last_seq
    clock_skew_ms: int


def _health_json(row: Any) -> dict[str, Any]:
    return {
        "online": row.online,
        "availability_ms": row.availability_ms,
        "last_seen_ms": row.last_seen_ms,
        "status_received_ms": row.status_received_ms,
        "status_time_ms": row.status_time_ms,
        "clock_skew_ms": row.clock_skew_ms,
        "recording": {"state": row.state, "recording_id": row.recording_id, "officer_id": row.officer_id,
                      "case_step": row.case_step},
        "battery_pct": row.battery_pct,
        "storage_free": row.storage_free,
        "buffered": {"chunks": row.buffered_chunks, "bytes": row.buffered_bytes},
        "firmware": row.firmware,
        "config_version": row.config_version,
        "reported_seq": row.reported_seq,
        "reported_head": row.reported_head,
        "last_checkpoint": row.checkpoint,
        "alarms": list(row.alarms or []),
    }


_EMPTY_HEALTH: dict[str, Any] = {
    "online": None, "availability_ms": None, "last_seen_ms": None, "status_received_ms": None,
    "status_time_ms": None, "clock_skew_ms": None,
    "recording": {"state": None, "recording_id": None, "officer_id": None, "case_step": None},
    "battery_pct": None, "storage_free": None, "buffered": {"chunks": None, "bytes": None}, "firmware": None,
    "config_version": None, "reported_seq": None, "reported_head": None, "last_checkpoint": None, "alarms": [],
}


class FleetService:
    """Device status, availability, and the fleet view."""

    def __init__(self, db: Database, clock: Clock, skew_tolerance_ms: int) -> None:
        self.db = db
        self.clock = clock
        self.skew_tolerance_ms = skew_tolerance_ms
        #: The MQTT side's counters for the fleet view (None when MQTT is off).
        self.mqtt_stats: Callable[[], dict[str, Any]] | None = None

    # -- status ------------------------------------------------------------------------------

    async def record_status(self, device_id: str, body: bytes) -> StatusOutcome:
        """Check and record a signed DeviceStatus received on ``device_id``'s status topic."""
        # (1)
        try:
            envelope = Envelope.from_bytes(body)
            status = DeviceStatus.peek(envelope)
        except SignatureError as exc:  # wrong payload type: malformed for this topic
            raise BadRequest(f"not a device status: {exc.message}", code=exc.code) from None
        # (2)
        if status.device_id != device_id:
            raise Forbidden(f"status names device {status.device_id} on the topic of {device_id}",
                            code="wrong_device")
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            # (3)
            device = (await conn.execute(_STATUS_DEVICE, {"b_device": device_id, "b_last": status.last_seq})).first()
            if device is None:
                raise NotFound(f"device {device_id} is not enrolled", code="unknown_device")
            # (4)
            if envelope.key_id != device.key_id:
                raise SignatureError(f"status is signed by key {envelope.key_id}, device {device_id}'s key is "
                                     f"{device.key_id}", code="unknown_key")
            envelope.verify(VerifyKey(device.alg, bytes(device.public_key)), payload_type=DeviceStatus.PAYLOAD_TYPE)
            has_health = device.health_of is not None
            skew = now - status.time_ms
            if has_health and device.status_time_ms is not None and status.time_ms < device.status_time_ms:
                await self._seen(conn, device_id, now, has_health)
                return StatusOutcome(device_id, False, None, skew)
            values: dict[str, Any] = {
                "last_seen_ms": now, "status_received_ms": now, "status_time_ms": status.time_ms,
                "clock_skew_ms": skew, "state": status.state, "recording_id": status.recording_id,
                "officer_id": status.officer_id, "case_step": status.case_step, "battery_pct": status.battery_pct,
                "storage_free": status.storage_free, "buffered_chunks": status.buffered_chunks,
                "buffered_bytes": status.buffered_bytes, "firmware": status.firmware,
                "config_version": status.config_version, "reported_seq": status.last_seq,
                "reported_head": status.head,
                "checkpoint": status.checkpoint.to_dict() if status.checkpoint is not None else None,
                "alarms": list(status.alarms), "status": envelope.raw,
            }
            await self._upsert(conn, device_id, has_health, values)
            await conn.execute(_DEVICE_SEEN, {"b_device": device_id, "last_seen_ms": now})
            gap = await self._continuity(conn, device, status, now)
            await self._skew(conn, device_id, skew, bool(device.skew_open), now)
        return StatusOutcome(device_id, True, gap, skew)

    async def _upsert(self, conn: AsyncConnection, device_id: str, exists: bool, values: dict[str, Any]) -> None:
        """Write ``values`` into the device's health row (``exists``: the row is there already)."""
        if exists:
            await conn.execute(_UPDATE_HEALTH, {"b_device": device_id, **values})
        else:
            await conn.execute(_INSERT_HEALTH, {"device_id": device_id, **values})

    async def _seen(self, conn: AsyncConnection, device_id: str, now: int, has_health: bool) -> None:
        await self._upsert(conn, device_id, has_health, {"last_seen_ms": now})
        await conn.execute(_DEVICE_SEEN, {"b_device": device_id, "last_seen_ms": now})

    async def _continuity(self, conn: AsyncConnection, device: Any, status: DeviceStatus,
                          now: int) -> tuple[int, int] | None:
        last, head = status.last_seq, status.head
        if last is None or head is None:
            return None
        dev = device.id
        if device.held is not None and device.held != head:  # the entry held at last_seq (read with the device)
            await open_finding(
                conn, F.CHAIN_SEQ_REUSE, dev,
                f"the device's signed status names a different entry at seq {last} than the one received",
                {"seq": last, "status_head": head, "entry_hash": device.held}, now, device_id=dev, seq=last,
                dedup_key=f"statushead:{dev}:{last}:{head}")
        highest = device.highest_seq
        if highest is not None and last <= highest:
            return None
        first = 0 if highest is None else highest + 1
        # Ingest opens, closes and splits gap findings against highest_seq: moving it up to what the
        # device signed makes the entries still to come close this gap as they arrive.
        await conn.execute(devices.update().where(devices.c.id == dev).values(highest_seq=last))
        count = last - first + 1
        await open_finding(
            conn, F.CHAIN_GAP, dev,
            f"seq {first}" + (f"..{last}" if last > first else "") + f" missing ({count} entries; "
            "the device's signed status says they exist)",
            {"first": first, "last": last, "from": "status"}, now, device_id=dev, seq=first,
            dedup_key=f"gap:{dev}:{first}-{last}")
        return first, last

    async def _skew(self, conn: AsyncConnection, device_id: str, skew: int, is_open: bool, now: int) -> None:
        """Open a clock-skew finding, or close the open one (``is_open``: there is one, as read with the device)."""
        if abs(skew) > self.skew_tolerance_ms:
            if not is_open:
                await open_finding(
                    conn, F.DEVICE_CLOCK_SKEW, device_id,
                    f"device clock is {skew / 1000:+.1f} s off the server clock (tolerance "
                    f"{self.skew_tolerance_ms / 1000:.1f} s)",
                    {"clock_skew_ms": skew, "tolerance_ms": self.skew_tolerance_ms}, now, device_id=device_id,
                    dedup_key=f"skew:{device_id}:{now}")
        elif is_open:
            for row in (await conn.execute(_OPEN_SKEW, {"b_device": device_id})).all():
                await close_finding(conn, row.id, now, f"clock within tolerance again ({skew} ms)")

    # -- availability -------------------------------------------------------------------------

    async def record_availability(self, device_id: str, payload: bytes, *, retained: bool) -> bool:
        """Record ``online``/``offline``; a retained replay (not live) does not count as seeing the device."""
        if payload not in (ONLINE, OFFLINE):
            raise BadRequest(f"availability must be 'online' or 'offline', not {payload[:32]!r}",
                             code="bad_availability")
        online = payload == ONLINE
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            device = (await conn.execute(self.db.lock_device(
                sa.select(devices.c.id).where(devices.c.id == device_id)))).first()
            if device is None:
                raise NotFound(f"device {device_id} is not enrolled", code="unknown_device")
            health = (await conn.execute(sa.select(device_health).where(
                device_health.c.device_id == device_id))).first()
            if retained and health is not None and health.online is not None:
                return online  # the server already knows something at least as recent
            values: dict[str, Any] = {"online": online, "availability_ms": now}
            if not retained:
                values["last_seen_ms"] = now
                await conn.execute(_DEVICE_SEEN, {"b_device": device_id, "last_seen_ms": now})
            await self._upsert(conn, device_id, health is not None, values)
            await self._offline_pending(conn, device_id, online, now)
        return online

    async def _offline_pending(self, conn: AsyncConnection, device_id: str, online: bool, now: int) -> None:
        if online:
            rows = (await conn.execute(sa.select(findings.c.id).where(
                findings.c.device_id == device_id, findings.c.code == F.DEVICE_OFFLINE_PENDING.code,
                findings.c.closed_ms.is_(None)))).all()
            for row in rows:
                await close_finding(conn, row.id, now, "device online again")
            return
        pending = (await conn.execute(sa.select(sa.func.count()).select_from(entries).where(
            entries.c.device_id == device_id, entries.c.kind == "chunk",
            entries.c.state.in_([ChunkState.ANNOUNCED.value, ChunkState.UPLOADED.value,
                                 ChunkState.REJECTED.value])))).scalar_one()
        if pending:
            await open_finding(conn, F.DEVICE_OFFLINE_PENDING, device_id,
                               f"device went offline with {pending} announced chunks not verified",
                               {"pending_chunks": pending}, now, device_id=device_id,
                               dedup_key=f"offline:{device_id}:{now}")

    # -- the view ------------------------------------------------------------------------------

    async def _pending(self, conn: AsyncConnection, device_id: str | None) -> dict[str, dict[str, Any]]:
        stmt = (sa.select(entries.c.device_id, entries.c.state, sa.func.count().label("n"),
                          sa.func.min(entries.c.received_ms).label("oldest"))
                .where(entries.c.kind == "chunk",
                       entries.c.state.in_([ChunkState.ANNOUNCED.value, ChunkState.UPLOADED.value,
                                            ChunkState.REJECTED.value]))
                .group_by(entries.c.device_id, entries.c.state))
        if device_id is not None:
            stmt = stmt.where(entries.c.device_id == device_id)
        out: dict[str, dict[str, Any]] = {}
        for r in (await conn.execute(stmt)).all():
            d = out.setdefault(r.device_id, {"pending": 0, "oldest": None, "unverified": 0})
            if r.state == ChunkState.ANNOUNCED.value:
                d["pending"], d["oldest"] = r.n, r.oldest
            else:
                d["unverified"] += r.n
        return out

    async def _gaps(self, conn: AsyncConnection, device_id: str | None) -> dict[str, int]:
        stmt = sa.select(findings.c.device_id, findings.c.evidence).where(
            findings.c.code == F.CHAIN_GAP.code, findings.c.closed_ms.is_(None))
        if device_id is not None:
            stmt = stmt.where(findings.c.device_id == device_id)
        out: dict[str, int] = {}
        for r in (await conn.execute(stmt)).all():
            out[r.device_id] = out.get(r.device_id, 0) + int(r.evidence["last"]) - int(r.evidence["first"]) + 1
        return out

    def _view(self, device: Any, health: Any, pending: dict[str, Any] | None, missing: int, now: int
              ) -> dict[str, Any]:
        p = pending or {"pending": 0, "oldest": None, "unverified": 0}
        return {
            "device_id": device.id, "serial": device.serial, "model": device.model, "trust_state": device.state,
            **(_health_json(health) if health is not None else _EMPTY_HEALTH),
            # The device row's last_seen covers HTTP requests too; the health row only MQTT.
            "last_seen_ms": max((x for x in (device.last_seen_ms, health.last_seen_ms if health is not None else None)
                                 if x is not None), default=None),
            "highest_seq": device.highest_seq, "receipted_seq": device.receipted_seq,
            "pending": {"chunks": p["pending"], "oldest_received_ms": p["oldest"],
                        "oldest_age_ms": now - p["oldest"] if p["oldest"] is not None else None},
            "unverified_chunks": p["unverified"],
            "missing_entries": missing,
        }

    async def fleet(self, device_ids: set[str] | None = None) -> dict[str, Any]:
        """Every device's (of ``device_ids``, when given) health, pending chunks and continuity, plus totals."""
        now = self.clock.now_ms()
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(devices).order_by(devices.c.enrolled_ms, devices.c.id))).all()
            healths = {r.device_id: r for r in (await conn.execute(sa.select(device_health))).all()}
            pending = await self._pending(conn, None)
            gaps = await self._gaps(conn, None)
        views = [self._view(r, healths.get(r.id), pending.get(r.id), gaps.get(r.id, 0), now) for r in rows
                 if device_ids is None or r.id in device_ids]
        return {
            "time_ms": now,
            "devices": views,
            "totals": {
                "devices": len(views),
                "online": sum(1 for v in views if v["online"]),
                "recording": sum(1 for v in views if v["recording"]["state"] == "recording"),
                "pending_chunks": sum(v["pending"]["chunks"] for v in views),
                "missing_entries": sum(v["missing_entries"] for v in views),
            },
            "mqtt": self.mqtt_stats() if self.mqtt_stats is not None else {"enabled": False},
        }

    async def device(self, device_id: str) -> dict[str, Any]:
        """One device's fleet view."""
        now = self.clock.now_ms()
        async with self.db.read() as conn:
            device = (await conn.execute(sa.select(devices).where(devices.c.id == device_id))).first()
            if device is None:
                raise NotFound(f"no device {device_id}", code="unknown_device")
            health = (await conn.execute(sa.select(device_health).where(
                device_health.c.device_id == device_id))).first()
            pending = await self._pending(conn, device_id)
            gaps = await self._gaps(conn, device_id)
        return self._view(device, health, pending.get(device_id), gaps.get(device_id, 0), now)

