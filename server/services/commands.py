"""Commands to devices: a closed set of kinds, signed by the server key, with expiry and nonce.

A command is stored first (with its exact signed bytes), then published QoS 1 on the device's
``cmd`` topic. It goes out again while unacknowledged and unexpired whenever the server's broker
connection comes back and whenever the device comes online, because a broker without persistence
forgets queued messages; the device's checklist (agent/commands.py) refuses the repeat of one it
already had as a replay, so re-sending is safe. The first acknowledgement wins: it is the device's
signed word on what it did with the command.

Who may send what: admin and device_admin any kind; an officer start, stop and select_step, on the
device assigned to them now (an officer's account name is their officer id); a supervisor
live_view_start and live_view_stop.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa

from custody.clock import Clock
from protocol.canonical import canonical_bytes
from protocol.envelope import Envelope
from protocol.errors import EncodingError, LocalProtocolError, SignatureError
from protocol.keys import VerifyKey
from protocol.messages import MAX_COMMAND_TTL_MS, Command, CommandAck, CommandKind
from protocol.schema import Invalid, check_id
from server.auth import Principal, Role
from server.db.database import Database
from server.db.schema import commands, device_keys, devices
from server.errors import BadRequest, Conflict, Forbidden, NotFound
from server.keyring import ServerKeyring
from server.services.officers import assignment_at

log = logging.getLogger(__name__)

#: Publishes a signed command on its device's topic; True once the broker has it.
Publisher = Callable[[str, bytes], Awaitable[bool]]

K = CommandKind
OFFICER_KINDS = frozenset({K.START, K.STOP, K.SELECT_STEP})
SUPERVISOR_KINDS = frozenset({K.LIVE_VIEW_START, K.LIVE_VIEW_STOP})
#: Largest ``params`` object, as canonical JSON.
MAX_PARAMS_BYTES = 4096
DEFAULT_TTL_S = 300


def _check_params(kind: str, params: dict[str, Any]) -> None:
    """The parameters a kind needs (the rest of a kind's object is the device's business)."""
    try:
        if kind == K.SELECT_STEP:
            if "case_step" not in params:
                raise Invalid("select_step needs params.case_step (a case step id, or null to clear it)")
            check_id("params.case_step", params["case_step"], optional=True)
        elif kind == K.ASSIGN_OFFICER:
            if "officer_id" not in params:
                raise Invalid("assign_officer needs params.officer_id (an officer id, or null)")
            check_id("params.officer_id", params["officer_id"], optional=True)
        elif kind == K.START and "case_step" in params:
            check_id("params.case_step", params["case_step"], optional=True)
    except Invalid as exc:
        raise BadRequest(str(exc), code="bad_params") from None


def command_json(row: Any, now_ms: int) -> dict[str, Any]:
    """API form of a command, with its status: ok | refused | unsupported | failed | expired | sent | pending."""
    if row.ack_status is not None:
        status = row.ack_status
    elif now_ms >= row.expires_ms:
        status = "expired"
    else:
        status = "sent" if row.published_ms is not None else "pending"
    return {
        "id": row.id, "device_id": row.device_id, "kind": row.kind, "params": row.params, "status": status,
        "issued_ms": row.issued_ms, "expires_ms": row.expires_ms, "actor": row.actor,
        "published_ms": row.published_ms, "publish_count": row.publish_count,
        "ack": None if row.ack_status is None else {
            "status": row.ack_status, "reason": row.ack_reason, "result": row.ack_result,
            "device_time_ms": row.ack_time_ms, "received_ms": row.ack_received_ms},
        "envelope": bytes(row.envelope).decode("ascii"),
    }


class CommandsService:
    """Issue, publish, list and acknowledge commands."""

    def __init__(self, db: Database, clock: Clock, keyring: ServerKeyring) -> None:
        self.db = db
        self.clock = clock
        self.keyring = keyring
        #: Set by the MQTT side; None while there is no broker (commands then wait as ``pending``).
        self.publisher: Publisher | None = None

    # -- who may ----------------------------------------------------------------------------------

    async def authorize(self, principal: Principal, device_id: str, kind: str) -> None:
        """Forbidden unless ``principal`` may send ``kind`` to ``device_id`` (see the module docstring)."""
        role = principal.role
        if role in (Role.ADMIN, Role.DEVICE_ADMIN):
            return
        if role == Role.SUPERVISOR and kind in SUPERVISOR_KINDS:
            return
        if role == Role.OFFICER and kind in OFFICER_KINDS:
            async with self.db.read() as conn:
                assignment = await assignment_at(conn, device_id, self.clock.now_ms())
            if assignment is not None and assignment.officer_id == principal.name:
                return
            raise Forbidden(f"device {device_id} is not assigned to officer {principal.name}",
                            code="forbidden_command")
        raise Forbidden(f"role {role.value} may not send {kind!r} commands", code="forbidden_command")

    async def may_read(self, principal: Principal, device_id: str) -> None:
        """Officers see only the commands of the device assigned to them; the fleet roles see all."""
        if principal.role != Role.OFFICER:
            return
        async with self.db.read() as conn:
            assignment = await assignment_at(conn, device_id, self.clock.now_ms())
        if assignment is None or assignment.officer_id != principal.name:
            raise Forbidden(f"device {device_id} is not assigned to officer {principal.name}",
                            code="forbidden_command")

    # -- issue --------------------------------------------------------------------------------------

    async def issue(self, device_id: str, kind: str, params: dict[str, Any] | None, ttl_s: int | None,
                    actor: str) -> dict[str, Any]:
        """Sign and store a command, then publish it (it stays ``pending`` while there is no broker)."""
        if kind not in CommandKind.ALL:
            raise BadRequest(f"unknown command kind {kind!r}", code="unknown_command_kind")
        params = dict(params or {})
        _check_params(kind, params)
        ttl_ms = (DEFAULT_TTL_S if ttl_s is None else ttl_s) * 1000
        if not 1000 <= ttl_ms <= MAX_COMMAND_TTL_MS:
            raise BadRequest("ttl_s must be between 1 s and 24 h", code="out_of_range")
        now = self.clock.now_ms()
        try:
            command = Command(v=1, id="cmd-" + secrets.token_hex(12), device_id=device_id, kind=kind,
                              issued_ms=now, expires_ms=now + ttl_ms, nonce=secrets.token_hex(16), params=params)
            if len(canonical_bytes(params)) > MAX_PARAMS_BYTES:
                raise BadRequest(f"params exceed {MAX_PARAMS_BYTES} bytes", code="bad_params")
            envelope = self.keyring.sign(command)
        except (EncodingError, LocalProtocolError) as exc:  # a float, or an integer beyond 2^53, in params
            raise BadRequest(f"params cannot travel in a signed command: {exc.message}", code="bad_params") from None
        async with self.db.write() as conn:
            device = (await conn.execute(sa.select(devices.c.state).where(devices.c.id == device_id))).first()
            if device is None:
                raise NotFound(f"no device {device_id}", code="unknown_device")
            if device.state == "revoked":
                raise Conflict(f"device {device_id} is revoked", code="device_revoked")
            await conn.execute(commands.insert().values(
                id=command.id, device_id=device_id, kind=kind, params=params, issued_ms=now,
                expires_ms=command.expires_ms, nonce=command.nonce, envelope=envelope.raw, actor=actor,
                publish_count=0))
        await self._publish(command.id, device_id, envelope.raw)
        return await self.get(device_id, command.id)

    async def push_assignment(self, device_id: str, officer_id: str | None, from_ms: int | None,
                              actor: str) -> str | None:
        """Tell the device its new officer (or none); never fails the assignment that caused it."""
        try:
            sent = await self.issue(device_id, K.ASSIGN_OFFICER, {"officer_id": officer_id, "from_ms": from_ms},
                                    MAX_COMMAND_TTL_MS // 1000, actor)
        except Exception:  # the device also learns its assignment from GET /api/v1/device/self
            log.exception("could not push the assignment of %s to the device", device_id)
            return None
        return str(sent["id"])

    async def _publish(self, command_id: str, device_id: str, raw: bytes) -> bool:
        publisher = self.publisher
        if publisher is None:
            return False
        try:
            ok = await publisher(device_id, raw)
        except Exception:  # the command stays pending and goes out on the next (re)connect
            log.exception("publishing command %s failed", command_id)
            return False
        if ok:
            async with self.db.write() as conn:
                await conn.execute(commands.update().where(commands.c.id == command_id).values(
                    published_ms=self.clock.now_ms(), publish_count=commands.c.publish_count + 1))
        return ok

    async def resend_pending(self, device_id: str | None = None) -> int:
        """Publish again every unacknowledged, unexpired command (of one device, or all)."""
        now = self.clock.now_ms()
        stmt = sa.select(commands.c.id, commands.c.device_id, commands.c.envelope).where(
            commands.c.ack_status.is_(None), commands.c.expires_ms > now).order_by(commands.c.issued_ms)
        if device_id is not None:
            stmt = stmt.where(commands.c.device_id == device_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt.limit(10_000))).all()
        sent = 0
        for r in rows:
            sent += await self._publish(r.id, r.device_id, bytes(r.envelope))
        return sent

    # -- read ---------------------------------------------------------------------------------------

    async def get(self, device_id: str, command_id: str) -> dict[str, Any]:
        """One command."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(commands).where(
                commands.c.id == command_id, commands.c.device_id == device_id))).first()
        if row is None:
            raise NotFound(f"no command {command_id} for device {device_id}", code="unknown_command")
        return command_json(row, self.clock.now_ms())

    async def list_commands(self, device_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """A device's commands, newest first."""
        async with self.db.read() as conn:
            if (await conn.execute(sa.select(devices.c.id).where(devices.c.id == device_id))).first() is None:
                raise NotFound(f"no device {device_id}", code="unknown_device")
            rows = (await conn.execute(sa.select(commands).where(commands.c.device_id == device_id)
                                       .order_by(commands.c.issued_ms.desc(), commands.c.id).limit(limit))).all()
        now = self.clock.now_ms()
        return [command_json(r, now) for r in rows]

    # -- acknowledgements ---------------------------------------------------------------------------

    async def record_ack(self, device_id: str, body: bytes) -> tuple[str, bool]:
        """Check and record a signed CommandAck from ``device_id``'s ack topic; (command id, recorded).

        (1) a well-formed envelope holding an ack, (2) naming the device whose topic carried it,
        (3) signed by that device's current key, (4) for a command sent to that device. The first
        acknowledgement wins; a later one is not recorded (``recorded`` False).
        """
        # (1)
        try:
            envelope = Envelope.from_bytes(body)
            ack = CommandAck.peek(envelope)
        except SignatureError as exc:
            raise BadRequest(f"not a command ack: {exc.message}", code=exc.code) from None
        # (2)
        if ack.device_id != device_id:
            raise Forbidden(f"ack names device {ack.device_id} on the topic of {device_id}", code="wrong_device")
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            # (3)
            device = (await conn.execute(sa.select(devices.c.key_id).where(devices.c.id == device_id))).first()
            if device is None:
                raise NotFound(f"device {device_id} is not enrolled", code="unknown_device")
            key = (await conn.execute(sa.select(device_keys.c.alg, device_keys.c.public_key).where(
                device_keys.c.device_id == device_id, device_keys.c.key_id == envelope.key_id))).first()
            if key is None or envelope.key_id != device.key_id:
                raise SignatureError(f"ack is not signed by the current key of device {device_id}", code="unknown_key")
            envelope.verify(VerifyKey(key.alg, bytes(key.public_key)), payload_type=CommandAck.PAYLOAD_TYPE)
            # (4)
            row = (await conn.execute(self.db.lock_device(sa.select(commands.c.device_id, commands.c.ack_status)
                                                          .where(commands.c.id == ack.command_id)))).first()
            if row is None or row.device_id != device_id:
                raise NotFound(f"no command {ack.command_id} was sent to device {device_id}", code="unknown_command")
            if row.ack_status is not None:
                return ack.command_id, False
            await conn.execute(commands.update().where(commands.c.id == ack.command_id).values(
                ack_status=ack.status, ack_reason=ack.reason, ack_result=ack.result, ack_time_ms=ack.time_ms,
                ack_received_ms=now, ack=envelope.raw))
        return ack.command_id, True
