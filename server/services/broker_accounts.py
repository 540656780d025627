"""Device accounts on the MQTT broker: user name = device id, a random password issued at enrollment.

Only the hash is stored (Mosquitto's ``$7$`` format, via server/broker_files.py), so the embedded
broker checks a device's password against the database, and a deployment builds Mosquitto's
password file from the same rows (:meth:`BrokerAccounts.password_lines`).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from server.db.database import Database
from server.db.schema import device_broker_credentials, devices
from server.mqtt.credentials import check_password, hash_password, new_password, password_line

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
