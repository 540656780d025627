"""The server's signing keys: the current one signs; earlier ones stay known for verification.

Private keys live in files (``keys/server-KEYID.key``, mode 0600), never in the database; the
database holds every public key with its creation and retirement time, so that anyone holding
the key history can verify a receipt or certificate signed years ago. Rotation adds a key and
retires the previous one; nothing is ever removed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import sqlalchemy as sa

from custody.clock import Clock
from protocol.canonical import b64d, b64e
from protocol.envelope import Envelope
from protocol.keys import ED25519, SigningKey, VerifyKey
from protocol.messages import ServerKey, SignedMessage
from server.datadir import write_private
from server.db.database import Database
from server.db.schema import server_keys
from server.errors import ConfigError

log = logging.getLogger(__name__)


def key_path(keys_dir: Path, key_id: str) -> Path:
    """File of one server private key."""
    return keys_dir / f"server-{key_id}.key"


def _write_key(keys_dir: Path, key: SigningKey) -> None:
    write_private(key_path(keys_dir, key.key_id), f"{key.alg}:{b64e(key.private_bytes())}\n")


def _read_key(keys_dir: Path, key_id: str) -> SigningKey:
    path = key_path(keys_dir, key_id)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigError(f"the private file of server key {key_id} is missing ({path})") from None
    if os.stat(path).st_mode & 0o077:
        raise ConfigError(f"{path} is readable by others: chmod 600 it")
    alg, _, b64 = text.partition(":")
    if alg != ED25519:
        raise ConfigError(f"{path}: unsupported key algorithm {alg!r}")
    key = SigningKey.from_private_bytes(b64d(b64, field="server key"))
    if key.key_id != key_id:
        raise ConfigError(f"{path} holds key {key.key_id}, not {key_id}")
    return key


class ServerKeyring:
    """Current signing key and key history, kept in step with the database."""

    def __init__(self, db: Database, keys_dir: Path, clock: Clock) -> None:
        self.db = db
        self.keys_dir = keys_dir
        self.clock = clock
        self._current: SigningKey | None = None
        self._history: tuple[ServerKey, ...] = ()

    @property
    def current(self) -> SigningKey:
        """The key that signs now."""
        if self._current is None:
            raise RuntimeError("keyring not loaded")
        return self._current

    @property
    def history(self) -> tuple[ServerKey, ...]:
        """Every server key, current first, then earlier ones newest first."""
        return self._history

    def verify_key(self, key_id: str) -> VerifyKey | None:
        """A current or earlier public key by id."""
        for k in self._history:
            if k.key_id == key_id:
                return k.verify_key
        return None

    async def load(self) -> None:
        """Load the keys, creating the first one when the database has none."""
        async with self.db.write() as conn:
            if not self.db.is_sqlite:
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7262164)"))
            count = (await conn.execute(sa.select(sa.func.count()).select_from(server_keys))).scalar_one()
            if count == 0:
                key = SigningKey.generate()
                _write_key(self.keys_dir, key)
                await conn.execute(
                    server_keys.insert().values(
                        key_id=key.key_id, alg=key.alg, public_key=key.public.raw, created_ms=self.clock.now_ms()
                    )
                )
                log.info("created server key %s", key.key_id)
        await self.refresh()

    async def refresh(self) -> None:
        """Re-read the key history (another process may have rotated)."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(sa.select(server_keys).order_by(server_keys.c.created_ms.desc(),
                                                                   server_keys.c.key_id))
            ).all()
        history = tuple(
            ServerKey(key_id=r.key_id, alg=r.alg, public_key=bytes(r.public_key), created_ms=r.created_ms,
                      retired_ms=r.retired_ms)
            for r in rows
        )
        current = next(k for k in history if k.retired_ms is None)
        if self._current is None or self._current.key_id != current.key_id:
            self._current = _read_key(self.keys_dir, current.key_id)
        # Current first, then earlier keys newest first.
        self._history = (current, *(k for k in history if k.key_id != current.key_id))

    async def rotate(self) -> ServerKey:
        """Make a new current key; the previous one is retired but kept for verification."""
        key = SigningKey.generate()
        _write_key(self.keys_dir, key)
        now = self.clock.now_ms()
        async with self.db.write() as conn:
            await conn.execute(
                server_keys.update().where(server_keys.c.retired_ms.is_(None)).values(retired_ms=now)
            )
            await conn.execute(
                server_keys.insert().values(key_id=key.key_id, alg=key.alg, public_key=key.public.raw, created_ms=now)
            )
        await self.refresh()
        log.warning("server key rotated: now %s (fingerprint %s)", key.key_id, key.public.fingerprint)
        return self._history[0]

    def signing_key(self, key_id: str) -> SigningKey:
        """The private key ``key_id`` (current or retired): enrollment answers are signed by the key a
        token pinned, even when the server key rotated after the token was made."""
        if key_id == self.current.key_id:
            return self.current
        if self.verify_key(key_id) is None:
            raise ConfigError(f"server key {key_id} is unknown")
        return _read_key(self.keys_dir, key_id)

    def sign(self, message: SignedMessage) -> Envelope:
        """Sign with the current key."""
        return message.sign(self.current)
