"""Seams to services that land on other branches, and the interim stand-ins main runs until they do.

Live view and the dashboard need four things main does not have yet. Each is a Protocol shaped
exactly like the service that will replace it, so wiring it is one line in :func:`build_seams`:

=================  ======================================  ================================================
seam               replaced by (branch)                    interim on main
=================  ======================================  ================================================
``CommandSender``  ``CommandsService.issue`` (sync-server)  :class:`InterimMqtt` signs with the server key and
                                                           publishes on the device's ``cmd`` topic (no acks)
``FleetView``      ``FleetService`` (sync-server)          :class:`InterimMqtt` keeps the last signed status
                                                           and availability in memory, plus the database's
                                                           pending uploads
``AccessLog``      ``AccessService`` (tamper)              :class:`InterimAccessLog`: a JSON-lines file in the
                                                           data dir, written and fsynced before the grant is
                                                           returned; not in the transparency log
``CasesView``      ``CasesService`` (cases-audit)          wired: cases-audit has landed on main
=================  ======================================  ================================================

None of the interims is evidence-grade: they exist so that live view and the pages work end to end
on main. ``InterimMqtt`` runs only when ``mqtt.url`` names a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiomqtt
import sqlalchemy as sa

from custody.clock import Clock
from protocol.envelope import Envelope
from protocol.errors import CustodyError
from protocol.keys import VerifyKey
from protocol.messages import Command, DeviceStatus
from protocol.topics import OFFLINE, ONLINE, DeviceTopic, device_filter, device_topic, parse_topic
from server.auth import Principal
from server.db.database import Database
from server.db.schema import device_keys, devices, entries
from server.errors import BadRequest, NotFound
from server.keyring import ServerKeyring

log = logging.getLogger(__name__)

# -- the seams -----------------------------------------------------------------------------------------


class CommandSender(Protocol):
    """Sign and send a command to a device (sync-server's ``CommandsService.issue``)."""

    async def issue(self, device_id: str, kind: str, params: dict[str, Any] | None, ttl_s: int | None,
                    actor: str) -> dict[str, Any]: ...


class FleetView(Protocol):
    """Health of devices as the server sees it (sync-server's ``FleetService``)."""

    async def fleet(self) -> dict[str, Any]: ...

    async def device(self, device_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads footage, as the access log records it (tamper's ``server.services.access.Reader``)."""

    actor: str
    principal_id: str
    role: str | None

    @classmethod
    def of(cls, principal: Principal) -> Reader:
        """The reader behind an authenticated request."""
        if principal.kind == "user":
            return cls(principal.actor, f"user:{principal.user_id}", principal.role.value)
        return cls(principal.actor, principal.actor, principal.role.value)


class Grant(Protocol):
    """What opening an access returns (tamper's ``AccessGrant``): at least its id."""

    @property
    def access_id(self) -> int: ...


class AccessLog(Protocol):
    """The access log (tamper's ``AccessService``): an access is on record before a byte is served."""

    async def open(self, reader: Reader, kind: str, object_keys: list[str], reason: str | None, *,
                   device_id: str | None = None, recording_id: str | None = None,
                   case_id: str | None = None) -> Grant: ...

    async def query(self, *, actor: str | None = None, device_id: str | None = None, case_id: str | None = None,
                    kind: str | None = None, from_ms: int | None = None, to_ms: int | None = None,
                    after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]: ...


class CasesView(Protocol):
    """Cases with their steps and links (cases-audit's ``CasesService``)."""

    async def list_cases(self) -> list[dict[str, Any]]: ...

    async def get_case(self, case_id: int) -> dict[str, Any]: ...


@dataclass(slots=True)
class Seams:
    """The seams one server process uses (``Services.seams``)."""

    commands: CommandSender | None
    fleet: FleetView
    access: AccessLog
    cases: CasesView | None = None
    mqtt: InterimMqtt | None = None

    async def start(self) -> None:
        """Start what runs in the background (the interim MQTT link)."""
        if self.mqtt is not None:
            self.mqtt.start()

    async def close(self) -> None:
        """Stop it."""
        if self.mqtt is not None:
            await self.mqtt.close()


# -- access log (interim) ------------------------------------------------------------------------------

ACCESS_KINDS = ("view", "live_view", "download", "export", "integrity")


def check_reason(reason: str | None) -> str:
    """A reason is required and must say something (as tamper's access log demands)."""
    text = (reason or "").strip()
    if len(text) < 4:
        raise BadRequest("reading footage needs a reason (at least 4 characters)", code="reason_required")
    if len(text) > 500 or any(ord(c) < 0x20 for c in text):
        raise BadRequest("a reason is at most 500 characters, without control characters", code="bad_reason")
    return text


@dataclass(frozen=True, slots=True)
class InterimGrant:
    """An access on record."""

    access_id: int


class InterimAccessLog:
    """Access events in an append-only JSON-lines file (one process; replaced by tamper's AccessService)."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self._lock = asyncio.Lock()
        self._next = 1 + sum(1 for _ in self._rows())

    def _rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    async def open(self, reader: Reader, kind: str, object_keys: list[str], reason: str | None, *,
                   device_id: str | None = None, recording_id: str | None = None,
                   case_id: str | None = None) -> InterimGrant:
        """Record an access (durably) and return its id."""
        if kind not in ACCESS_KINDS:
            raise ValueError(f"unknown access kind {kind!r}")
        text = check_reason(reason)
        async with self._lock:
            access_id = self._next
            row = {"id": access_id, "kind": kind, "actor": reader.actor, "principal_id": reader.principal_id,
                   "role": reader.role, "device_id": device_id, "recording_id": recording_id, "case_id": case_id,
                   "objects": len(set(object_keys)), "object_keys": sorted(set(object_keys)), "reason": text,
                   "time_ms": self.clock.now_ms(), "log_index": None}
            await asyncio.to_thread(self._append, json.dumps(row, ensure_ascii=False) + "\n")
            self._next += 1
        return InterimGrant(access_id)

    def _append(self, line: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)  # on record before the first byte is served
        finally:
            os.close(fd)

    async def query(self, *, actor: str | None = None, device_id: str | None = None, case_id: str | None = None,
                    kind: str | None = None, from_ms: int | None = None, to_ms: int | None = None,
                    after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Access events, oldest first, filtered."""
        rows = await asyncio.to_thread(self._rows)
        out = []
        for r in rows:
            if r["id"] <= after_id or any(v is not None and r.get(k) != v for k, v in (
                    ("actor", actor), ("device_id", device_id), ("case_id", case_id), ("kind", kind))):
                continue
            if (from_ms is not None and r["time_ms"] < from_ms) or (to_ms is not None and r["time_ms"] >= to_ms):
                continue
            out.append(r)
            if len(out) >= limit:
                break
        return out


# -- MQTT (interim) ------------------------------------------------------------------------------------


class InterimMqtt:
    """The server's side of the broker until sync-server lands: commands out, status and availability in."""

    def __init__(self, url: str, db: Database, clock: Clock, keyring: ServerKeyring, *,
                 username: str | None = None, password: str | None = None) -> None:
        from agent.mqtt import BrokerAddress  # the one URL parser of the project

        self.address = BrokerAddress.parse(url)
        self.db = db
        self.clock = clock
        self.keyring = keyring
        self.username = username
        self.password = password
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.status: dict[str, tuple[DeviceStatus, int]] = {}
        self.online: dict[str, tuple[bool, int]] = {}

    def start(self) -> None:
        """Connect (and reconnect) in the background."""
        self._task = asyncio.create_task(self._run(), name="interim-mqtt")

    async def close(self) -> None:
        """Disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.address.host, self.address.port, username=self.username,
                                          password=self.password,
                                          identifier=f"custody-server-interim-{secrets.token_hex(4)}") as client:
                    self._client = client
                    await client.subscribe(device_filter(DeviceTopic.STATUS), qos=1)
                    await client.subscribe(device_filter(DeviceTopic.AVAILABILITY), qos=1)
                    self.connected.set()
                    async for message in client.messages:
                        await self._handle(str(message.topic), bytes(message.payload))
            except aiomqtt.MqttError as exc:
                log.warning("interim MQTT link down (%s); retrying", exc)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(1.0)

    async def _handle(self, topic: str, payload: bytes) -> None:
        try:
            parsed = parse_topic(topic)
        except CustodyError:
            return
        device_id = parsed.device_id
        if device_id is None:
            return
        now = self.clock.now_ms()
        if parsed.kind is DeviceTopic.AVAILABILITY and payload in (ONLINE, OFFLINE):
            self.online[device_id] = (payload == ONLINE, now)
        elif parsed.kind is DeviceTopic.STATUS:
            try:
                envelope = Envelope.from_bytes(payload)
                status = DeviceStatus.peek(envelope)
                if status.device_id != device_id:
                    return
                async with self.db.read() as conn:
                    key = (await conn.execute(sa.select(device_keys.c.alg, device_keys.c.public_key).join(
                        devices, devices.c.id == device_keys.c.device_id).where(
                        devices.c.id == device_id, device_keys.c.key_id == envelope.key_id))).first()
                if key is None:
                    return
                envelope.verify(VerifyKey(key.alg, bytes(key.public_key)), payload_type=DeviceStatus.PAYLOAD_TYPE)
            except CustodyError as exc:
                log.warning("interim MQTT: status of %s refused: %s", device_id, exc)
                return
            self.status[device_id] = (status, now)

    # -- CommandSender ---------------------------------------------------------------------------------

    async def issue(self, device_id: str, kind: str, params: dict[str, Any] | None, ttl_s: int | None,
                    actor: str) -> dict[str, Any]:
        """Sign a command and publish it QoS 1 (not stored, no acknowledgement: sync-server does that)."""
        now = self.clock.now_ms()
        command = Command(v=1, id="cmd-" + secrets.token_hex(12), device_id=device_id, kind=kind, issued_ms=now,
                          expires_ms=now + (ttl_s or 300) * 1000, nonce=secrets.token_hex(16), params=params or {})
        envelope = self.keyring.sign(command)
        client = self._client
        published = False
        if client is not None:
            await client.publish(device_topic(device_id, DeviceTopic.CMD), envelope.raw, qos=1)
            published = True
        return {"id": command.id, "device_id": device_id, "kind": kind, "params": command.params,
                "status": "sent" if published else "pending", "issued_ms": now, "expires_ms": command.expires_ms,
                "actor": actor}

    # -- FleetView -------------------------------------------------------------------------------------

    async def fleet(self) -> dict[str, Any]:
        """Every device, in sync-server's fleet-view shape."""
        now = self.clock.now_ms()
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(devices).order_by(devices.c.enrolled_ms, devices.c.id))).all()
            pending = await _pending(conn)
        views = [self._view(r, pending.get(r.id, 0), now) for r in rows]
        return {"time_ms": now, "devices": views,
                "totals": {"devices": len(views), "online": sum(1 for v in views if v["online"]),
                           "recording": sum(1 for v in views if v["recording"]["state"] == "recording"),
                           "pending_chunks": sum(v["pending"]["chunks"] for v in views), "missing_entries": 0},
                "mqtt": {"enabled": True, "interim": True}}

    async def device(self, device_id: str) -> dict[str, Any]:
        """One device's view."""
        for view in (await self.fleet())["devices"]:
            if view["device_id"] == device_id:
                return dict(view)
        raise NotFound(f"no device {device_id}", code="unknown_device")

    def _view(self, row: Any, pending: int, now: int) -> dict[str, Any]:
        return fleet_view(row, self.status.get(row.id), self.online.get(row.id), pending)


async def _pending(conn: Any) -> dict[str, int]:
    result = await conn.execute(sa.select(entries.c.device_id, sa.func.count().label("n")).where(
        entries.c.kind == "chunk", entries.c.state.in_(("announced", "uploaded"))).group_by(entries.c.device_id))
    return {r.device_id: int(r.n) for r in result.all()}


def fleet_view(row: Any, status: tuple[DeviceStatus, int] | None, online: tuple[bool, int] | None,
               pending: int) -> dict[str, Any]:
    """A device in sync-server's fleet-view shape, from the registry row and what MQTT said."""
    st, received = status if status is not None else (None, None)
    return {
        "device_id": row.id, "serial": row.serial, "model": row.model, "trust_state": row.state,
        "online": online[0] if online is not None else None,
        "availability_ms": online[1] if online is not None else None,
        "last_seen_ms": max((x for x in (row.last_seen_ms, received) if x is not None), default=None),
        "status_received_ms": received, "status_time_ms": st.time_ms if st else None,
        "clock_skew_ms": (st.time_ms - received) if st and received is not None else None,
        "recording": {"state": st.state if st else None, "recording_id": st.recording_id if st else None,
                      "officer_id": st.officer_id if st else None, "case_step": st.case_step if st else None},
        "battery_pct": st.battery_pct if st else None, "storage_free": st.storage_free if st else None,
        "buffered": {"chunks": st.buffered_chunks if st else None, "bytes": st.buffered_bytes if st else None},
        "firmware": st.firmware if st else None, "config_version": st.config_version if st else None,
        "reported_seq": st.last_seq if st else None, "reported_head": st.head if st else None,
        "last_checkpoint": ({"origin": st.checkpoint.origin, "size": st.checkpoint.size}
                            if st and st.checkpoint else None),
        "alarms": list(st.alarms) if st else [],
        "highest_seq": getattr(row, "highest_seq", None), "receipted_seq": getattr(row, "receipted_seq", None),
        "pending": {"chunks": pending}, "missing_entries": 0,
    }


class RegistryFleet:
    """Fleet view without any broker: the registry and pending uploads only (online unknown)."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def fleet(self) -> dict[str, Any]:
        """Every device."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(devices).order_by(devices.c.enrolled_ms, devices.c.id))).all()
            pending = await _pending(conn)
        views = [fleet_view(r, None, None, pending.get(r.id, 0)) for r in rows]
        return {"time_ms": self.clock.now_ms(), "devices": views,
                "totals": {"devices": len(views), "online": 0, "recording": 0,
                           "pending_chunks": sum(v["pending"]["chunks"] for v in views), "missing_entries": 0},
                "mqtt": {"enabled": False}}

    async def device(self, device_id: str) -> dict[str, Any]:
        """One device."""
        for view in (await self.fleet())["devices"]:
            if view["device_id"] == device_id:
                return dict(view)
        raise NotFound(f"no device {device_id}", code="unknown_device")


def build_seams(config: Any, db: Database, clock: Clock, keyring: ServerKeyring, data_dir: Path) -> Seams:
    """The seams for this process: the interims until the real services land (see the module docstring)."""
    access = InterimAccessLog(data_dir / "access-log.interim.jsonl", clock)
    url = config.mqtt.url
    if url and url.startswith(("mqtt://", "mqtts://")):
        mqtt = InterimMqtt(url, db, clock, keyring, username=config.mqtt.username,
                           password=config.mqtt.password.reveal() if config.mqtt.password else None)
        return Seams(commands=mqtt, fleet=mqtt, access=access, mqtt=mqtt)
    return Seams(commands=None, fleet=RegistryFleet(db, clock), access=access)
