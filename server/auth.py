"""Who is asking: API tokens for people, signed requests for devices, and the roles.

People authenticate with ``Authorization: Bearer <token>``; the token is 256 random bits and the
database keeps only its SHA-256, so a copy of the database lets nobody in. Devices sign each
request with their key (protocol/httpsig.py); the server enforces the freshness window and the
uniqueness of each nonce with a primary key in the database, so several server processes share
one replay window.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from custody.clock import Clock
from protocol.httpsig import HEADERS, SignedRequest
from protocol.keys import VerifyKey
from server.db.database import Database
from server.db.dialect import insert_ignore
from server.db.schema import api_tokens, device_keys, devices, request_nonces, users
from server.errors import Unauthorized

TOKEN_PREFIX = "cst_"  # noqa: S105 - a prefix, not a secret


class Role(StrEnum):
    """The roles of the role matrix (DESIGN.md, Users)."""

    ADMIN = "admin"
    DEVICE_ADMIN = "device_admin"
    OFFICER = "officer"
    CASE_HANDLER = "case_handler"
    SUPERVISOR = "supervisor"
    LEGAL_REVIEWER = "legal_reviewer"
    AUDITOR = "auditor"
    DEVICE = "device"


#: Roles a person's account can have (``device`` belongs to enrolled devices only).
USER_ROLES = tuple(r for r in Role if r is not Role.DEVICE)


def new_token() -> str:
    """A fresh API token (shown once, never stored)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    kind: str  # "user" | "device"
    name: str  # user name or device id
    role: Role
    user_id: int | None = None
    token_id: str | None = None
    device_state: str | None = None

    @property
    def actor(self) -> str:
        """How this caller is named in records (``user:alice``, ``device:abc...``)."""
        return f"{self.kind}:{self.name}"


def has_device_auth(headers: object) -> bool:
    """True when the request carries any of the signed-request headers."""
    lower = {str(k).lower() for k in headers}  # type: ignore[attr-defined]
    return any(h.lower() in lower for h in HEADERS)


# Every device request runs this lookup: built once (building a statement costs about twice what
# running it does).
_DEVICE_KEY = (
    sa.select(devices.c.id, devices.c.state, device_keys.c.alg, device_keys.c.public_key)
    .join(device_keys, sa.and_(device_keys.c.device_id == devices.c.id, device_keys.c.key_id == devices.c.key_id))
    .where(devices.c.id == sa.bindparam("b_device"))
)


class Authenticator:
    """Turns credentials into a :class:`Principal` or an :class:`Unauthorized` with a precise code."""

    def __init__(self, db: Database, clock: Clock, window_ms: int) -> None:
        self.db = db
        self.clock = clock
        self.window_ms = window_ms

    async def bearer(self, token: str) -> Principal:
        """Authenticate an API token."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 100:
            raise Unauthorized("not a Custody API token", code="bad_token")
        now = self.clock.now_ms()
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(api_tokens, users.c.name, users.c.role, users.c.disabled_ms)
                    .join(users, users.c.id == api_tokens.c.user_id)
                    .where(api_tokens.c.token_hash == hash_token(token))
                )
            ).first()
        if row is None:
            raise Unauthorized("unknown API token", code="bad_token")
        if row.revoked_ms is not None:
            raise Unauthorized("this API token was revoked", code="token_revoked")
        if row.expires_ms is not None and row.expires_ms <= now:
            raise Unauthorized("this API token has expired", code="token_expired")
        if row.disabled_ms is not None:
            raise Unauthorized(f"user {row.name} is disabled", code="user_disabled")
        return Principal("user", row.name, Role(row.role), user_id=row.user_id, token_id=row.id)

    async def device(self, headers: dict[str, str], method: str, path: str, body: bytes) -> Principal:
        """Authenticate a signed device request (freshness, body hash, signature, then nonce)."""
        signed = SignedRequest.from_headers(headers)
        async with self.db.read() as conn:
            row = (await conn.execute(_DEVICE_KEY, {"b_device": signed.device_id})).first()
        if row is None:
            raise Unauthorized(f"device {signed.device_id} is not enrolled", code="unknown_device")
        key = VerifyKey(row.alg, bytes(row.public_key))
        now = self.clock.now_ms()
        # Signature first: a forged request must not be able to burn a genuine nonce.
        signed.verify(key, method, path, body, now, self.window_ms, device_id=row.id)
        async with self.db.write() as conn:
            await self._use_nonce(conn, signed, now)
        return Principal("device", row.id, Role.DEVICE, device_state=row.state)

    async def _use_nonce(self, conn: AsyncConnection, signed: SignedRequest, now: int) -> None:
        inserted = await insert_ignore(
            conn, request_nonces,
            {"device_id": signed.device_id, "nonce": signed.nonce, "time_ms": signed.time_ms, "seen_ms": now},
            ["device_id", "nonce"],
        )
        if not inserted:
            raise Unauthorized("request nonce was already used (replay)", code="replayed_request")

    async def prune_nonces(self) -> int:
        """Forget nonces older than twice the window: requests that old are refused as stale anyway."""
        horizon = self.clock.now_ms() - 2 * self.window_ms
        async with self.db.write() as conn:
            result = await conn.execute(request_nonces.delete().where(request_nonces.c.seen_ms < horizon))
        return int(result.rowcount or 0)
