"""People's accounts and their API tokens."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from custody.clock import Clock
from server.auth import USER_ROLES, Role, hash_token, new_token
from server.db.database import Database
from server.db.schema import api_tokens, users
from server.errors import BadRequest, Conflict, NotFound

USER_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token as issued: the secret is in here once and nowhere else."""

    id: str
    token: str
    user: str
    expires_ms: int | None

    def to_json(self) -> dict[str, Any]:
        """API form."""
        return {"id": self.id, "token": self.token, "user": self.user, "expires_ms": self.expires_ms}


def check_user_name(name: str) -> None:
    """Refuse names that are not 1-64 lowercase letters, digits, ``_.-`` starting with a letter."""
    if not isinstance(name, str) or not USER_NAME_RE.fullmatch(name):
        raise BadRequest(f"user name {name!r} must be 1-64 lowercase letters, digits, '_', '.', '-', "
                         "starting with a letter", code="bad_user_name")


def user_json(row: Any) -> dict[str, Any]:
    """API form of a user row."""
    return {"name": row.name, "role": row.role, "created_ms": row.created_ms, "created_by": row.created_by,
            "disabled_ms": row.disabled_ms}


def token_json(row: Any) -> dict[str, Any]:
    """API form of a token row (never the secret, never the hash)."""
    return {"id": row.id, "label": row.label, "created_ms": row.created_ms, "expires_ms": row.expires_ms,
            "revoked_ms": row.revoked_ms}


class AccountsService:
    """Users and tokens."""

    def __init__(self, db: Database, clock: Clock, token_ttl_days: int) -> None:
        self.db = db
        self.clock = clock
        self.token_ttl_days = token_ttl_days

    def _expiry(self, ttl_days: int | None) -> int | None:
        days = self.token_ttl_days if ttl_days is None else ttl_days
        return None if days == 0 else self.clock.now_ms() + days * DAY_MS

    async def create_user(self, name: str, role: str, actor: str | None,
                          ttl_days: int | None = None) -> tuple[dict[str, Any], IssuedToken]:
        """Create a user with a first token."""
        check_user_name(name)
        if role not in USER_ROLES:
            raise BadRequest(f"role {role!r} is not one of {', '.join(USER_ROLES)}", code="bad_role")
        now = self.clock.now_ms()
        try:
            async with self.db.write() as conn:
                result = await conn.execute(
                    users.insert().values(name=name, role=Role(role).value, created_ms=now, created_by=actor)
                )
                user_id = int(result.inserted_primary_key[0])  # type: ignore[index]
                issued = await self._issue(conn, user_id, name, "initial", ttl_days)
        except IntegrityError:
            raise Conflict(f"user {name!r} already exists", code="user_exists") from None
        return await self.get_user(name), issued

    async def _issue(self, conn: Any, user_id: int, name: str, label: str | None,
                     ttl_days: int | None) -> IssuedToken:
        token = new_token()
        token_id = secrets.token_hex(8)
        expires = self._expiry(ttl_days)
        await conn.execute(
            api_tokens.insert().values(id=token_id, user_id=user_id, token_hash=hash_token(token), label=label,
                                       created_ms=self.clock.now_ms(), expires_ms=expires)
        )
        return IssuedToken(token_id, token, name, expires)

    async def _user_row(self, conn: Any, name: str) -> Any:
        check_user_name(name)
        row = (await conn.execute(sa.select(users).where(users.c.name == name))).first()
        if row is None:
            raise NotFound(f"no user {name!r}", code="unknown_user")
        return row

    async def get_user(self, name: str) -> dict[str, Any]:
        """One user."""
        async with self.db.read() as conn:
            return user_json(await self._user_row(conn, name))

    async def list_users(self) -> list[dict[str, Any]]:
        """Every user."""
        async with self.db.read() as conn:
            return [user_json(r) for r in (await conn.execute(sa.select(users).order_by(users.c.name))).all()]

    async def create_token(self, name: str, label: str | None, ttl_days: int | None) -> IssuedToken:
        """Another token for a user."""
        async with self.db.write() as conn:
            row = await self._user_row(conn, name)
            if row.disabled_ms is not None:
                raise Conflict(f"user {name!r} is disabled", code="user_disabled")
            return await self._issue(conn, row.id, name, label, ttl_days)

    async def list_tokens(self, name: str) -> list[dict[str, Any]]:
        """A user's tokens (ids and dates only)."""
        async with self.db.read() as conn:
            row = await self._user_row(conn, name)
            rows = (await conn.execute(
                sa.select(api_tokens).where(api_tokens.c.user_id == row.id).order_by(api_tokens.c.created_ms)
            )).all()
        return [token_json(r) for r in rows]

    async def revoke_token(self, token_id: str) -> dict[str, Any]:
        """Revoke a token at once; revoking twice keeps the first time."""
        if not re.fullmatch(r"[0-9a-f]{16}", token_id):
            raise BadRequest(f"token id {token_id!r} is not 16 hex digits", code="bad_id")
        async with self.db.write() as conn:
            row = (await conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id))).first()
            if row is None:
                raise NotFound(f"no token {token_id}", code="unknown_token")
            if row.revoked_ms is None:
                await conn.execute(api_tokens.update().where(api_tokens.c.id == token_id)
                                   .values(revoked_ms=self.clock.now_ms()))
            row = (await conn.execute(sa.select(api_tokens).where(api_tokens.c.id == token_id))).one()
        return token_json(row)

    async def disable_user(self, name: str) -> dict[str, Any]:
        """Disable a user: all their tokens stop working at once."""
        async with self.db.write() as conn:
            row = await self._user_row(conn, name)
            if row.disabled_ms is None:
                await conn.execute(users.update().where(users.c.id == row.id).values(disabled_ms=self.clock.now_ms()))
        return await self.get_user(name)

    async def bootstrap_admin(self) -> IssuedToken | None:
        """At first start (no users at all), create user ``admin`` and return its token."""
        async with self.db.read() as conn:
            count = (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one()
        if count:
            return None
        try:
            _, issued = await self.create_user("admin", Role.ADMIN.value, None, ttl_days=0)
        except Conflict:  # another process created it first
            return None
        return issued
