"""Device accounts on the MQTT broker: user name = device id, a random password issued at enrollment.

Only the hash is stored (Mosquitto's ``$7$`` format, via server/broker_files.py), so the embedded
broker checks a device's password against the database, and a deployment builds Mosquitto's
password file from the same rows (:meth:`BrokerAccounts.password_lines`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from server.broker_files import mosquitto_acl, mosquitto_password_file, write_broker_files
from server.config import MqttConfig
from server.db.database import Database
from server.db.schema import device_broker_credentials, devices
from server.mqtt.credentials import check_password, hash_password, new_password, password_line

log = logging.getLogger(__name__)

#: Device states that may still connect: a lost or suspended device keeps delivering (its entries
#: after the cutoff are stored and marked untrusted, never dropped); a revoked one is shut out.
BROKER_STATES = frozenset({"active", "suspended", "lost"})


async def issue_password(conn: AsyncConnection, device_id: str, now_ms: int) -> str:
    """A new broker password for ``device_id``, replacing any earlier one, inside the caller's transaction."""
    password = new_password()
    stored = hash_password(device_id, password)
    updated = await conn.execute(device_broker_credentials.update().where(
        device_broker_credentials.c.device_id == device_id).values(password_hash=stored, issued_ms=now_ms))
    if not updated.rowcount:
        await conn.execute(device_broker_credentials.insert().values(
            device_id=device_id, password_hash=stored, issued_ms=now_ms))
    return password


class BrokerAccounts:
    """Checks device credentials for the embedded broker."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def check(self, username: str, password: str | None) -> bool:
        """Whether ``username`` is an enrolled device allowed on the broker and ``password`` is its password."""
        async with self.db.read() as conn:
            row = (await conn.execute(
                sa.select(device_broker_credentials.c.password_hash, devices.c.state)
                .join(devices, devices.c.id == device_broker_credentials.c.device_id)
                .where(device_broker_credentials.c.device_id == username))).first()
        return row is not None and row.state in BROKER_STATES and check_password(username, row.password_hash, password)

    async def password_lines(self) -> list[str]:
        """Mosquitto password-file lines of every device allowed on the broker."""
        async with self.db.read() as conn:
            rows = (await conn.execute(
                sa.select(device_broker_credentials.c.device_id, device_broker_credentials.c.password_hash)
                .join(devices, devices.c.id == device_broker_credentials.c.device_id)
                .where(devices.c.state.in_(sorted(BROKER_STATES))).order_by(devices.c.id))).all()
        return [password_line(r.device_id, r.password_hash) for r in rows]


@dataclass(slots=True)
class BrokerFiles:
    """Mosquitto's password file and ACL for an external broker, from the device registry.

    The server's own line is hashed once per process (a fresh salt at every call would make the
    file differ at every round), so :meth:`write_if_changed` rewrites the files only when the set
    of devices allowed on the broker changed: an enrollment, a revocation.
    """

    db: Database
    mqtt: MqttConfig
    _server_line: str | None = field(default=None, init=False)
    _written: tuple[str, str] | None = field(default=None, init=False)

    async def texts(self) -> dict[str, Any]:
        """The two files' text, how many devices they admit, and warnings for the operator."""
        lines = await BrokerAccounts(self.db).password_lines()
        warnings = []
        if self.mqtt.password is not None:
            if self._server_line is None:
                self._server_line = password_line(self.mqtt.username,
                                                  hash_password(self.mqtt.username, self.mqtt.password.reveal()))
            lines.append(self._server_line)
        else:
            warnings.append(f"mqtt.password is not set: the server user {self.mqtt.username!r} has no line in the "
                            "password file; add it with mosquitto_passwd")
        return {"password_file": mosquitto_password_file(lines), "acl": mosquitto_acl(self.mqtt.username),
                "devices": len(lines) - (self.mqtt.password is not None), "server_user": self.mqtt.username,
                "warnings": warnings}

    async def write_if_changed(self) -> bool:
        """Write the files into ``mqtt.broker_files_dir`` when their content changed; True when written."""
        directory = self.mqtt.broker_files_dir
        if directory is None:
            return False
        files = await self.texts()
        content = (files["password_file"], files["acl"])
        if content == self._written:
            return False
        group: int | str | None = self.mqtt.broker_files_group
        if isinstance(group, str) and group.isdigit():
            group = int(group)
        await asyncio.to_thread(write_broker_files, Path(directory), password_file=content[0], acl=content[1],
                                group=group)
        if self._written is None:
            for warning in files["warnings"]:
                log.warning("broker files: %s", warning)
        self._written = content
        log.info("wrote the broker's password file (%d devices) and ACL into %s", files["devices"], directory)
        return True
