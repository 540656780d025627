"""Devices: enrollment with one-time tokens, state changes with sequence cutoffs, key rotation.

Enrollment (DESIGN.md, wire contract): a device admin creates a one-time token that pins the
server key's fingerprint; the device sends a self-signed EnrollmentRequest; the answer, signed
by exactly the key the token pinned, carries a DeviceCertificate, the server keys (current and
earlier), the API URL and the broker URL and credentials.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from custody.clock import Clock
from protocol import findings as F
from protocol.enrollment import EnrollmentToken
from protocol.envelope import Envelope
from protocol.errors import SignatureError
from protocol.keys import VerifyKey, key_id_for
from protocol.messages import DeviceCertificate, EnrollmentAnswer, EnrollmentRequest, KeyRotation
from server.config import MqttConfig
from server.db.database import Database
from server.db.schema import device_keys, device_states, devices, enrollment_tokens, entries
from server.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from server.keyring import ServerKeyring
from server.services.broker_accounts import issue_password
from server.services.findings import open_finding
from server.trust import DEVICE_STATES, STATE_TRANSITIONS

#: Bits of an enrollment secret: 128, the shortest the protocol allows (22 base64url characters),
#: so that the token string stays within EnrollmentRequest.token's 200 characters.
ENROLL_SECRET_BYTES = 16


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _secret_of(token_field: str) -> str:
    """The one-time secret from the request's ``token`` field: the whole token string or its secret."""
    if token_field.startswith("cet1."):
        return EnrollmentToken.parse(token_field).secret
    return token_field


def device_json(row: Any) -> dict[str, Any]:
    """API form of a device."""
    return {"id": row.id, "serial": row.serial, "model": row.model, "firmware": row.firmware, "key_id": row.key_id,
            "state": row.state, "enrolled_ms": row.enrolled_ms, "last_seen_ms": row.last_seen_ms,
            "highest_seq": row.highest_seq, "receipted_seq": row.receipted_seq}


@dataclass(frozen=True, slots=True)
class CreatedEnrollmentToken:
    """A new enrollment token (the string is shown once)."""

    id: str
    token: EnrollmentToken
    expires_ms: int

    def to_json(self) -> dict[str, Any]:
        """API form."""
        return {"id": self.id, "token": self.token.to_string(), "expires_ms": self.expires_ms,
                "server_fingerprint": self.token.server_fingerprint, "api_url": self.token.api_url}


class DevicesService:
    """Enrollment, registry, states and device keys."""

    def __init__(self, db: Database, clock: Clock, keyring: ServerKeyring, mqtt: MqttConfig,
                 window_ms: int, default_token_ttl_s: int) -> None:
        self.db = db
        self.clock = clock
        self.keyring = keyring
        self.mqtt = mqtt
        self.window_ms = window_ms
        self.default_token_ttl_s = default_token_ttl_s
        #: Set once the listener is bound (the URL goes into tokens and answers).
        self.api_url = ""
        #: Broker URL handed to devices, set once the MQTT side knows it (None: no MQTT, HTTP only).
        self.mqtt_url: str | None = None

    # -- enrollment ------------------------------------------------------------------------

    async def create_enrollment_token(self, actor: str, ttl_s: int | None, note: str | None) -> CreatedEnrollmentToken:
        """A one-time token pinning the current server key."""
        ttl = self.default_token_ttl_s if ttl_s is None else ttl_s
        if not 60 <= ttl <= 30 * 86400:
            raise BadRequest("ttl_s must be between 60 s and 30 days", code="out_of_range")
        secret = secrets.token_urlsafe(ENROLL_SECRET_BYTES)
        key = self.keyring.current
        token = EnrollmentToken(secret, key.public.fingerprint, self.api_url)
        token_id = secrets.token_hex(8)
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            await conn.execute(enrollment_tokens.insert().values(
                id=token_id, secret_hash=_hash_secret(secret), created_by=actor, created_ms=now,
                expires_ms=now + ttl * 1000, note=note, server_key_id=key.key_id))
        return CreatedEnrollmentToken(token_id, token, now + ttl * 1000)

    async def list_enrollment_tokens(self) -> list[dict[str, Any]]:
        """Tokens with their state (never the secret)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(enrollment_tokens).order_by(enrollment_tokens.c.created_ms))).all()
        return [{"id": r.id, "created_by": r.created_by, "created_ms": r.created_ms, "expires_ms": r.expires_ms,
                 "note": r.note, "used_ms": r.used_ms, "device_id": r.device_id, "server_key_id": r.server_key_id}
                for r in rows]

    async def enroll(self, body: bytes) -> bytes:
        """Check an EnrollmentRequest envelope and its token; return the signed EnrollmentAnswer bytes.

        (1) the request is a well-formed envelope signed by the key it carries;
        (2) the token exists, has not expired, and was not used by another device;
        (3) the request is fresh;
        (4) the device is not already enrolled by another token;
        then the certificate and answer are signed by the server key the token pinned.
        """
        # (1)
        envelope = Envelope.from_bytes(body)
        request = EnrollmentRequest.open_self_signed(envelope)
        now = self.clock.now_ms()
        device_id = request.device_id
        async with self.db.write() as conn:
            # (2)
            token = (await conn.execute(self.db.lock_device(
                sa.select(enrollment_tokens).where(
                    enrollment_tokens.c.secret_hash == _hash_secret(_secret_of(request.token)))))).first()
            if token is None:
                raise Unauthorized("unknown enrollment token", code="enrollment_token_unknown")
            retry = token.used_ms is not None and token.device_id == device_id
            if token.used_ms is not None and not retry:
                raise Conflict("this enrollment token was already used", code="enrollment_token_used")
            if token.expires_ms <= now and not retry:
                raise Unauthorized("this enrollment token has expired", code="enrollment_token_expired")
            # (3)
            if abs(now - request.time_ms) > self.window_ms:
                raise Unauthorized("enrollment request time is outside the freshness window", code="stale_request")
            signing = self.keyring.signing_key(token.server_key_id)
            # (4)
            existing = (await conn.execute(sa.select(devices).where(devices.c.id == device_id))).first()
            if existing is not None and not retry:
                raise Conflict(f"device {device_id} is already enrolled", code="device_exists")
            if existing is None:
                cert = DeviceCertificate(v=1, device_id=device_id, alg=request.alg, public_key=request.public_key,
                                         serial=request.serial, model=request.model, issued_ms=now,
                                         issuer_key_id=signing.key_id).sign(signing)
                await conn.execute(devices.insert().values(
                    id=device_id, serial=request.serial, model=request.model, firmware=request.firmware,
                    key_id=request.verify_key.key_id, state="active", enrolled_ms=now, enrollment_token_id=token.id,
                    certificate=cert.raw))
                await conn.execute(device_keys.insert().values(
                    device_id=device_id, key_id=request.verify_key.key_id, alg=request.alg,
                    public_key=request.public_key, created_ms=now))
                await conn.execute(device_states.insert().values(
                    device_id=device_id, state="active", cutoff_seq=None, changed_ms=now,
                    actor=f"enrollment:{token.id}", reason="enrolled"))
                await conn.execute(enrollment_tokens.update().where(enrollment_tokens.c.id == token.id)
                                   .values(used_ms=now, device_id=device_id))
                certificate = cert.raw
            else:
                certificate = bytes(existing.certificate)
            # A retry gets a new password: only the hash of the first one was kept.
            mqtt_password = await issue_password(conn, device_id, now) if self.mqtt_url is not None else None
        answer = EnrollmentAnswer(
            v=1, device_id=device_id, certificate=certificate, server_keys=self.keyring.history, api_url=self.api_url,
            mqtt_url=self.mqtt_url, mqtt_username=device_id if mqtt_password is not None else None,
            mqtt_password=mqtt_password, issued_ms=now)
        return answer.sign(signing).raw

    # -- registry ----------------------------------------------------------------------------

    async def _row(self, conn: AsyncConnection, device_id: str, *, lock: bool = False) -> Any:
        stmt = sa.select(devices).where(devices.c.id == device_id)
        row = (await conn.execute(self.db.lock_device(stmt) if lock else stmt)).first()
        if row is None:
            raise NotFound(f"no device {device_id}", code="unknown_device")
        return row

    async def get(self, device_id: str) -> dict[str, Any]:
        """One device."""
        async with self.db.read() as conn:
            return device_json(await self._row(conn, device_id))

    async def certificate(self, device_id: str) -> bytes:
        """The device's certificate envelope."""
        async with self.db.read() as conn:
            return bytes((await self._row(conn, device_id)).certificate)

    async def list_devices(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every device, optionally in one state."""
        stmt = sa.select(devices).order_by(devices.c.enrolled_ms, devices.c.id)
        if state is not None:
            if state not in DEVICE_STATES:
                raise BadRequest(f"state must be one of {', '.join(DEVICE_STATES)}", code="bad_value")
            stmt = stmt.where(devices.c.state == state)
        async with self.db.read() as conn:
            return [device_json(r) for r in (await conn.execute(stmt)).all()]

    async def state_history(self, device_id: str) -> list[dict[str, Any]]:
        """Every state change with its cutoff."""
        async with self.db.read() as conn:
            await self._row(conn, device_id)
            rows = (await conn.execute(sa.select(device_states).where(device_states.c.device_id == device_id)
                                       .order_by(device_states.c.id))).all()
        return [{"state": r.state, "cutoff_seq": r.cutoff_seq, "changed_ms": r.changed_ms, "actor": r.actor,
                 "reason": r.reason} for r in rows]

    async def keys(self, device_id: str) -> list[dict[str, Any]]:
        """Every key the device held."""
        async with self.db.read() as conn:
            await self._row(conn, device_id)
            rows = (await conn.execute(sa.select(device_keys).where(device_keys.c.device_id == device_id)
                                       # Same-millisecond rotations: the retired key came first.
                                       .order_by(device_keys.c.created_ms, device_keys.c.retired_ms.is_(None)))
                ).all()
        return [{"key_id": r.key_id, "alg": r.alg, "public_key": r.public_key.hex(), "created_ms": r.created_ms,
                 "retired_ms": r.retired_ms, "retired_after_seq": r.retired_after_seq} for r in rows]

    async def set_state(self, device_id: str, state: str, actor: str, reason: str | None) -> dict[str, Any]:
        """Change state, recording the cutoff; entries after it not yet receipted become untrusted."""
        if state not in DEVICE_STATES:
            raise BadRequest(f"state must be one of {', '.join(DEVICE_STATES)}", code="bad_value")
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            row = await self._row(conn, device_id, lock=True)
            if state not in STATE_TRANSITIONS[row.state]:
                raise Conflict(f"device {device_id} is {row.state}; it cannot become {state}",
                               code="illegal_state_change")
            cutoff = row.receipted_seq
            await conn.execute(device_states.insert().values(
                device_id=device_id, state=state, cutoff_seq=cutoff, changed_ms=now, actor=actor, reason=reason))
            await conn.execute(devices.update().where(devices.c.id == device_id).values(state=state))
            if state != "active":
                after = entries.c.seq > cutoff if cutoff is not None else sa.true()
                untrusted = (await conn.execute(
                    sa.select(entries.c.seq).where(entries.c.device_id == device_id, after, entries.c.trusted)
                )).scalars().all()
                if untrusted:
                    await conn.execute(entries.update().where(entries.c.device_id == device_id,
                                                              entries.c.seq.in_(untrusted)).values(trusted=False))
                for seq in untrusted:
                    await open_finding(
                        conn, F.ENTRY_UNTRUSTED, device_id,
                        f"seq {seq} follows the {state} cutoff at seq {cutoff}", {"seq": seq, "cutoff_seq": cutoff,
                                                                                   "state": state},
                        now, device_id=device_id, seq=seq, dedup_key=f"untrusted:{device_id}:{seq}")
        return {**(await self.get(device_id)), "cutoff_seq": cutoff}

    # -- device keys ------------------------------------------------------------------------

    async def rotate_key(self, device_id: str, body: bytes) -> dict[str, Any]:
        """Accept a new device key signed by its current key (the only way a device key changes)."""
        envelope = Envelope.from_bytes(body)
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            row = await self._row(conn, device_id, lock=True)
            if row.state != "active":
                # A lost device's key may be in someone else's hands: it must not choose a new one.
                raise Forbidden(f"device {device_id} is {row.state}: only an active device may rotate its key",
                                code="device_not_active")
            current = (await conn.execute(sa.select(device_keys).where(
                device_keys.c.device_id == device_id, device_keys.c.key_id == row.key_id))).one()
            try:
                rotation = KeyRotation.open(envelope, VerifyKey(current.alg, bytes(current.public_key)))
            except SignatureError as exc:
                raise SignatureError(f"key rotation is not signed by the device's current key: {exc.message}",
                                     code=exc.code) from None
            if rotation.device_id != device_id or rotation.old_key_id != row.key_id:
                raise BadRequest("key rotation names another device or key", code="wrong_device")
            if abs(now - rotation.time_ms) > self.window_ms:
                raise Unauthorized("key rotation time is outside the freshness window", code="stale_request")
            new_kid = key_id_for(rotation.new_public_key)
            known = (await conn.execute(sa.select(device_keys.c.key_id).where(
                device_keys.c.device_id == device_id, device_keys.c.key_id == new_kid))).first()
            if known is not None:
                raise Conflict("the new key was already used by this device", code="key_reused")
            await conn.execute(device_keys.update().where(
                device_keys.c.device_id == device_id, device_keys.c.key_id == row.key_id
            ).values(retired_ms=now, retired_after_seq=row.highest_seq))
            await conn.execute(device_keys.insert().values(
                device_id=device_id, key_id=new_kid, alg=rotation.alg, public_key=rotation.new_public_key,
                created_ms=now, rotation=envelope.raw))
            await conn.execute(devices.update().where(devices.c.id == device_id).values(key_id=new_kid))
        return {"device_id": device_id, "key_id": new_kid, "previous_key_id": row.key_id,
                "previous_retired_after_seq": row.highest_seq}
