"""Officers (行政执法人员清单) and the history of which device each one carried when.

An assignment is a row with a time window; assigning a device closes its open assignment at the
same instant, so the history has no overlaps and no holes that were not real. Assigning to an
officer whose enforcement certificate has expired is refused (持证上岗: only certified officers
enforce).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from custody.clock import Clock
from protocol.schema import MAX_TIME_MS, MIN_TIME_MS, Invalid, check_id
from server.db.database import Database
from server.db.schema import assignments, devices, officers
from server.errors import BadRequest, Conflict, NotFound, Unprocessable


def check_officer_id(officer_id: str) -> None:
    """Officer ids are protocol identifiers: they travel in signed entries."""
    try:
        check_id("officer id", officer_id)
    except Invalid as exc:
        raise BadRequest(str(exc), code="bad_id") from None


def _check_time(name: str, value: int) -> None:
    if not MIN_TIME_MS <= value < MAX_TIME_MS:
        raise BadRequest(f"{name} is out of range (2000-01-01 to 2100-01-01 in ms)", code="out_of_range")


def officer_json(row: Any) -> dict[str, Any]:
    """API form of an officer."""
    return {"id": row.id, "name": row.name, "unit": row.unit, "cert_number": row.cert_number,
            "cert_expires_ms": row.cert_expires_ms, "created_ms": row.created_ms, "updated_ms": row.updated_ms}


def assignment_json(row: Any) -> dict[str, Any]:
    """API form of an assignment."""
    return {"id": row.id, "device_id": row.device_id, "officer_id": row.officer_id, "from_ms": row.from_ms,
            "until_ms": row.until_ms, "actor": row.actor, "created_ms": row.created_ms}


# Run for every entry ingested: built once (building a statement costs about twice running it).
_ASSIGNMENT_AT = (
    sa.select(assignments)
    .where(assignments.c.device_id == sa.bindparam("b_device"), assignments.c.from_ms <= sa.bindparam("b_time"),
           sa.or_(assignments.c.until_ms.is_(None), assignments.c.until_ms > sa.bindparam("b_time")))
    .order_by(assignments.c.from_ms.desc())
    .limit(1)
)


_IN_FORCE = _ASSIGNMENT_AT.subquery("in_force")
#: The assignment in force (None columns when there is none) and the certificate of an officer
#: (None columns when unknown, or when ``b_officer`` is None): what every entry is checked against.
_ASSIGNMENT_AND_CERT = (
    sa.select(_IN_FORCE.c.id, _IN_FORCE.c.officer_id, officers.c.cert_expires_ms, officers.c.cert_number)
    .select_from(sa.select(sa.literal(1).label("one")).subquery("one")
                 .outerjoin(_IN_FORCE, sa.true())
                 .outerjoin(officers, officers.c.id == sa.bindparam("b_officer")))
)


async def assignment_and_cert(conn: AsyncConnection, device_id: str, time_ms: int, officer_id: str | None) -> Any:
    """One row: the assignment of ``device_id`` in force at ``time_ms`` (``id``, ``officer_id``) and
    ``officer_id``'s certificate (``cert_expires_ms``, ``cert_number``), each None when absent."""
    return (await conn.execute(_ASSIGNMENT_AND_CERT, {"b_device": device_id, "b_time": time_ms,
                                                      "b_officer": officer_id})).one()


#: The assignments of some devices that overlap a time span, each with its officer's certificate.
_ASSIGNMENTS_OVERLAPPING = (
    sa.select(assignments.c.id, assignments.c.device_id, assignments.c.officer_id, assignments.c.from_ms,
              assignments.c.until_ms, officers.c.cert_expires_ms, officers.c.cert_number)
    .select_from(assignments.outerjoin(officers, officers.c.id == assignments.c.officer_id))
    .where(assignments.c.device_id.in_(sa.bindparam("b_devices", expanding=True)),
           assignments.c.from_ms <= sa.bindparam("b_last"),
           sa.or_(assignments.c.until_ms.is_(None), assignments.c.until_ms > sa.bindparam("b_first")))
)


async def assignments_overlapping(conn: AsyncConnection, device_ids: list[str], first_ms: int, last_ms: int
                                  ) -> dict[str, list[Any]]:
    """Per device, its assignments in force at some time in ``[first_ms, last_ms]``, each with the
    assigned officer's ``cert_expires_ms`` and ``cert_number``: what a group of entries is checked
    against in one trip (pick each entry's with :func:`in_force`)."""
    found: dict[str, list[Any]] = {d: [] for d in device_ids}
    for row in (await conn.execute(_ASSIGNMENTS_OVERLAPPING, {"b_devices": device_ids, "b_first": first_ms,
                                                               "b_last": last_ms})).all():
        found[row.device_id].append(row)
    return found


def in_force(rows: list[Any], time_ms: int) -> Any | None:
    """Of ``rows`` (one device's assignments), the one in force at ``time_ms``, as :func:`assignment_at`
    chooses it."""
    return max((r for r in rows if r.from_ms <= time_ms and (r.until_ms is None or r.until_ms > time_ms)),
               key=lambda r: r.from_ms, default=None)


async def assignment_at(conn: AsyncConnection, device_id: str, time_ms: int) -> Any | None:
    """The assignment of ``device_id`` in force at ``time_ms``, if any."""
    return (await conn.execute(_ASSIGNMENT_AT, {"b_device": device_id, "b_time": time_ms})).first()


class OfficersService:
    """Officers and assignments."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def create(self, officer_id: str, name: str, unit: str, cert_number: str,
                     cert_expires_ms: int) -> dict[str, Any]:
        """Add an officer."""
        check_officer_id(officer_id)
        _check_time("cert_expires_ms", cert_expires_ms)
        now = self.clock.now_ms()
        try:
            async with self.db.write() as conn:
                await conn.execute(officers.insert().values(
                    id=officer_id, name=name, unit=unit, cert_number=cert_number, cert_expires_ms=cert_expires_ms,
                    created_ms=now, updated_ms=now))
        except IntegrityError:
            raise Conflict(f"officer {officer_id!r} or certificate {cert_number!r} already exists",
                           code="officer_exists") from None
        return await self.get(officer_id)

    async def update(self, officer_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change name, unit, certificate number or expiry (e.g. a renewed certificate)."""
        check_officer_id(officer_id)
        if "cert_expires_ms" in changes:
            _check_time("cert_expires_ms", changes["cert_expires_ms"])
        try:
            async with self.db.write() as conn:
                result = await conn.execute(officers.update().where(officers.c.id == officer_id)
                                            .values(**changes, updated_ms=self.clock.now_ms()))
                if not result.rowcount:
                    raise NotFound(f"no officer {officer_id!r}", code="unknown_officer")
        except IntegrityError:
            raise Conflict(f"certificate {changes.get('cert_number')!r} belongs to another officer",
                           code="officer_exists") from None
        return await self.get(officer_id)

    async def get(self, officer_id: str) -> dict[str, Any]:
        """One officer."""
        check_officer_id(officer_id)
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(officers).where(officers.c.id == officer_id))).first()
        if row is None:
            raise NotFound(f"no officer {officer_id!r}", code="unknown_officer")
        return officer_json(row)

    async def list_officers(self) -> list[dict[str, Any]]:
        """Every officer."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(officers).order_by(officers.c.id))).all()
        return [officer_json(r) for r in rows]

    async def assign(self, device_id: str, officer_id: str, from_ms: int | None, actor: str) -> dict[str, Any]:
        """Assign a device to an officer from ``from_ms`` (default now), closing the current assignment."""
        check_officer_id(officer_id)
        now = self.clock.now_ms()
        start = now if from_ms is None else from_ms
        _check_time("from_ms", start)
        async with self.db.write() as conn:
            device = (await conn.execute(self.db.lock_device(sa.select(devices.c.id, devices.c.state)
                                                             .where(devices.c.id == device_id)))).first()
            if device is None:
                raise NotFound(f"no device {device_id}", code="unknown_device")
            if device.state == "revoked":
                raise Conflict(f"device {device_id} is revoked", code="device_revoked")
            officer = (await conn.execute(sa.select(officers).where(officers.c.id == officer_id))).first()
            if officer is None:
                raise NotFound(f"no officer {officer_id!r}", code="unknown_officer")
            if officer.cert_expires_ms <= start:
                raise Unprocessable(
                    f"officer {officer_id}'s enforcement certificate {officer.cert_number} expired; "
                    "only certified officers may be assigned a recorder", code="officer_certificate_expired")
            current = (await conn.execute(
                sa.select(assignments).where(assignments.c.device_id == device_id, assignments.c.until_ms.is_(None))
            )).first()
            if current is not None:
                if current.from_ms >= start:
                    raise Conflict("a new assignment must start after the current one started",
                                   code="assignment_overlap")
                await conn.execute(assignments.update().where(assignments.c.id == current.id).values(until_ms=start))
            result = await conn.execute(assignments.insert().values(
                device_id=device_id, officer_id=officer_id, from_ms=start, until_ms=None, created_ms=now, actor=actor))
            new_id = result.inserted_primary_key[0]  # type: ignore[index]
            row = (await conn.execute(sa.select(assignments).where(assignments.c.id == new_id))).one()
        return assignment_json(row)

    async def unassign(self, device_id: str, actor: str) -> dict[str, Any] | None:
        """End the device's current assignment now; returns it, or None when there was none."""
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            current = (await conn.execute(
                sa.select(assignments).where(assignments.c.device_id == device_id, assignments.c.until_ms.is_(None))
            )).first()
            if current is None:
                return None
            await conn.execute(assignments.update().where(assignments.c.id == current.id).values(until_ms=now))
            row = (await conn.execute(sa.select(assignments).where(assignments.c.id == current.id))).one()
        return assignment_json(row)

    async def history(self, device_id: str) -> list[dict[str, Any]]:
        """Every assignment of a device, oldest first."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(assignments).where(assignments.c.device_id == device_id)
                                       .order_by(assignments.c.from_ms))).all()
        return [assignment_json(r) for r in rows]

    async def current(self, device_id: str) -> dict[str, Any] | None:
        """The assignment in force now."""
        async with self.db.read() as conn:
            row = await assignment_at(conn, device_id, self.clock.now_ms())
        return assignment_json(row) if row is not None else None
