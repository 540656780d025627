"""Units (bureau > section > team) and the scope a caller acts in.

Every officer, device, user and case may belong to a unit. A user acts within the subtree of their
scope root: ``users.scope_unit_id`` when an admin granted a wider scope, else their own unit; a
user with neither, an admin, and a device (which is bound to its own records elsewhere) act
agency-wide. A resource without a unit is outside every restricted scope: an unplaced record is
visible only agency-wide, never to everyone.

A refused attempt is an ``access.denied`` finding, written in its own transaction so that it stays
on record although the request fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from custody.clock import Clock
from protocol import findings as codes
from server.auth import Principal, Role
from server.db.database import Database
from server.db.schema import cases, devices, enrollment_tokens, officers, units, users
from server.errors import BadRequest, Forbidden, NotFound, Unprocessable
from server.services.findings import open_finding

#: Which kind of unit may sit under which (None: the top of the tree).
PARENT_KIND = {"bureau": None, "section": "bureau", "team": "section"}
UNIT_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")

#: The tables whose rows belong to a unit, by the name used in API paths and messages.
UNIT_TABLES: dict[str, sa.Table] = {"officer": officers, "device": devices, "user": users, "case": cases}


class OutOfScope(Forbidden):
    """The resource exists but lies outside the caller's units."""

    code = "out_of_scope"


@dataclass(frozen=True, slots=True)
class Scope:
    """The units a caller may act in; ``units is None`` means agency-wide."""

    root: str | None
    units: frozenset[str] | None

    @property
    def everywhere(self) -> bool:
        """True for an unrestricted scope."""
        return self.units is None

    def covers(self, unit_id: str | None) -> bool:
        """True when a resource of ``unit_id`` lies inside this scope."""
        return self.units is None or (unit_id is not None and unit_id in self.units)

    def where(self, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
        """A filter keeping rows whose unit lies inside this scope."""
        if self.units is None:
            return sa.true()
        return column.in_(sorted(self.units))

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"root": self.root, "units": None if self.units is None else sorted(self.units)}


EVERYWHERE = Scope(None, None)


def unit_json(row: Any) -> dict[str, Any]:
    """JSON form of a unit."""
    return {"id": row.id, "name": row.name, "kind": row.kind, "parent_id": row.parent_id, "path": row.path,
            "created_ms": row.created_ms, "created_by": row.created_by}


class UnitsService:
    """The unit tree, assignments of resources to units, and scope checks."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    async def create(self, unit_id: str, name: str, kind: str, parent_id: str | None, actor: str) -> dict[str, Any]:
        """Add a unit under its parent (a bureau has none)."""
        if not UNIT_ID.fullmatch(unit_id):
            raise BadRequest(f"unit id {unit_id!r} must match {UNIT_ID.pattern}", code="bad_id")
        if kind not in PARENT_KIND:
            raise BadRequest(f"unit kind must be one of {', '.join(PARENT_KIND)}", code="bad_value")
        async with self.db.write() as conn:
            path = f"/{unit_id}/"
            if parent_id is not None:
                parent = (await conn.execute(sa.select(units).where(units.c.id == parent_id))).first()
                if parent is None:
                    raise Unprocessable(f"unknown parent unit {parent_id}", code="unknown_unit")
                path = parent.path + unit_id + "/"
                parent_kind = parent.kind
            else:
                parent_kind = None
            if PARENT_KIND[kind] != parent_kind:
                want = PARENT_KIND[kind] or "no parent"
                raise Unprocessable(f"a {kind} sits under {want}, not under {parent_kind or 'no parent'}",
                                    code="bad_unit_parent")
            if (await conn.execute(sa.select(units.c.id).where(units.c.id == unit_id))).first() is not None:
                raise Unprocessable(f"unit {unit_id} exists", code="unit_exists")
            await conn.execute(units.insert().values(id=unit_id, name=name, kind=kind, parent_id=parent_id, path=path,
                                                     created_ms=self.clock.now_ms(), created_by=actor))
            row = (await conn.execute(sa.select(units).where(units.c.id == unit_id))).one()
        return unit_json(row)

    async def list_units(self, scope: Scope = EVERYWHERE) -> list[dict[str, Any]]:
        """Every unit in ``scope``, parents before children."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(units).where(scope.where(units.c.id)).order_by(units.c.path))).all()
        return [unit_json(r) for r in rows]

    async def subtree(self, unit_id: str) -> frozenset[str]:
        """The ids of ``unit_id`` and every unit below it."""
        async with self.db.read() as conn:
            path = (await conn.execute(sa.select(units.c.path).where(units.c.id == unit_id))).scalar()
            if path is None:
                return frozenset()
            ids = (await conn.execute(sa.select(units.c.id).where(units.c.path.startswith(path)))).scalars().all()
        return frozenset(ids)

    async def scope(self, principal: Principal | None) -> Scope:
        """The scope ``principal`` acts in."""
        if principal is None or principal.kind != "user" or principal.role is Role.ADMIN:
            return EVERYWHERE
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(users.c.unit_id, users.c.scope_unit_id)
                                      .where(users.c.name == principal.name))).first()
        root = None if row is None else (row.scope_unit_id or row.unit_id)
        if root is None:
            return EVERYWHERE
        return Scope(root, await self.subtree(root))

    async def unit_of(self, kind: str, resource_id: Any) -> tuple[bool, str | None]:
        """Whether the resource exists, and its unit."""
        table = UNIT_TABLES[kind]
        key = table.c.name if kind == "user" else table.c.id
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(table.c.unit_id).where(key == resource_id))).first()
        return (row is not None, None if row is None else row.unit_id)

    async def check(self, principal: Principal | None, kind: str, resource_id: Any, action: str) -> None:
        """Refuse (and record) ``action`` on a resource outside the caller's scope; unknown ids pass through.

        Unknown resources are left to the service that answers 404 for them.
        """
        scope = await self.scope(principal)
        if scope.everywhere:
            return
        exists, unit_id = await self.unit_of(kind, resource_id)
        if exists and not scope.covers(unit_id):
            await self.refuse(principal, kind, resource_id, action, unit_id, scope)

    async def refuse(self, principal: Principal | None, kind: str, resource_id: Any, action: str,
                     unit_id: str | None, scope: Scope) -> None:
        """Record an ``access.denied`` finding and raise :class:`OutOfScope`."""
        actor = principal.actor if principal else "anonymous"
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            await open_finding(
                conn, codes.ACCESS_DENIED, f"{kind}:{resource_id}",
                f"{actor} may not {action} {kind} {resource_id}: unit {unit_id or '(none)'} is outside "
                f"scope {scope.root}",
                {"actor": actor, "action": action, "kind": kind, "id": str(resource_id), "unit_id": unit_id,
                 "scope": scope.root, "reason": "out_of_scope"},
                now, device_id=str(resource_id) if kind == "device" else None)
        raise OutOfScope(f"{kind} {resource_id} is outside your units", code="out_of_scope", kind=kind)

    async def place(self, kind: str, resource_id: Any, unit_id: str | None, *,
                    scope_unit_id: str | None = None) -> dict[str, Any]:
        """Put a resource in a unit (a user may also get a wider scope root)."""
        table = UNIT_TABLES[kind]
        key = table.c.name if kind == "user" else table.c.id
        values: dict[str, Any] = {"unit_id": unit_id}
        if kind == "user":
            values["scope_unit_id"] = scope_unit_id
        async with self.db.write() as conn:
            for u in {unit_id, scope_unit_id} - {None}:
                if (await conn.execute(sa.select(units.c.id).where(units.c.id == u))).first() is None:
                    raise Unprocessable(f"unknown unit {u}", code="unknown_unit")
            result = await conn.execute(table.update().where(key == resource_id).values(**values))
            if not result.rowcount:
                raise NotFound(f"no {kind} {resource_id}", code=f"unknown_{kind}")
        return {"kind": kind, "id": resource_id, **values}

    async def place_enrolled(self) -> int:
        """Put devices without a unit in the unit of the user who made their enrollment token."""
        async with self.db.write() as conn:
            rows = (await conn.execute(
                sa.select(devices.c.id, users.c.unit_id)
                .join(enrollment_tokens, enrollment_tokens.c.id == devices.c.enrollment_token_id)
                .join(users, sa.literal("user:") + users.c.name == enrollment_tokens.c.created_by)
                .where(devices.c.unit_id.is_(None), users.c.unit_id.is_not(None)))).all()
            for r in rows:
                await conn.execute(devices.update().where(devices.c.id == r.id).values(unit_id=r.unit_id))
        return len(rows)

    async def scoped_ids(self, kind: str, scope: Scope) -> set[Any] | None:
        """Ids of the resources of ``kind`` inside ``scope`` (None: all of them)."""
        if scope.everywhere:
            return None
        table = UNIT_TABLES[kind]
        key = table.c.name if kind == "user" else table.c.id
        async with self.db.read() as conn:
            return set((await conn.execute(sa.select(key).where(scope.where(table.c.unit_id)))).scalars().all())
