"""The second copy of footage: copy verified chunks to a second store and check each copy against its entry.

Replication is a server-side duty, not an API client: it reads footage the way the server's own
integrity duties do, so no route has to serve every chunk to a bulk reader, and the second store's
credentials live only in the configuration of the processes that copy. It runs inside the server
(``replication.copy_in_server``) or as a separate process (``custody admin replicate``) on the same
configuration; progress lives in the database (one ``replicas`` row per verified copy), so any
number of processes on one PostgreSQL database can share the work, and restarts resume.

The second store is one of the footage stores (a directory, or an S3 bucket with Object Lock), so it
is write-once like the first: a copy is never overwritten, and a different body under the same key
is refused and reported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from custody.clock import Clock
from protocol.states import ChunkState
from server.config import ServerConfig
from server.db.database import Database
from server.db.dialect import insert_ignore
from server.db.schema import entries, footage_retention, replicas
from server.storage.base import FootageStore, ObjectExists, StoreUnavailable
from server.storage.grant import AccessGrant
from server.storage.local import LocalStore

log = logging.getLogger(__name__)


def second_store(config: ServerConfig, clock: Clock, to: str | None = None) -> FootageStore:
    """The store named by ``to`` (default ``replication.to``): a directory or s3://BUCKET."""
    to = to or config.replication.to
    if not to:
        raise ValueError("no second store configured (replication.to)")
    if to.startswith("s3://"):
        from server.storage.s3 import S3Store

        return S3Store(dataclasses.replace(config.replication.s3, bucket=to[5:].strip("/")), clock)
    # A second local store never hands out upload targets: no URL, no usable upload secret.
    return LocalStore(Path(to), base_url="", upload_secret=b"")


def target_name(to: str) -> str:
    """How a target is recorded: s3://BUCKET as given, a directory as an absolute path."""
    return to.rstrip("/") if to.startswith("s3://") else str(Path(to).resolve())


def overdue(verified_ms: int, now_ms: int, delay_ms: int) -> bool:
    """True when footage verified at ``verified_ms`` should have a verified second copy by ``now_ms``."""
    return now_ms - verified_ms >= delay_ms


@dataclass(slots=True)
class RoundResult:
    """What one replication round did."""

    copied: int = 0
    already_there: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # object key -> reason

    def to_json(self) -> dict[str, Any]:
        """JSON form for the CLI."""
        return {"copied": self.copied, "already_there": self.already_there, "failed": self.failed}


class ReplicationService:
    """Copies verified chunks from ``store`` to ``target`` and records each verified copy."""

    def __init__(self, db: Database, clock: Clock, store: FootageStore, target: FootageStore, to: str,
                 batch: int = 200) -> None:
        self.db = db
        self.clock = clock
        self.store = store
        self.target = target
        self.name = target_name(to)
        self.batch = batch
        # Keys that failed in this process are retried by the next process, not every round.
        self._failed: dict[str, str] = {}
        #: This process's integrity-duty access grant (server/services/access.py), set before the first round.
        self.read_grant: AccessGrant | None = None

    def _grant(self) -> AccessGrant:
        if self.read_grant is None:
            raise RuntimeError("replication has no access grant: its access event was not recorded")
        return self.read_grant

    async def pending(self, limit: int) -> list[Any]:
        """Verified chunks without a verified copy in the target, oldest verification first."""
        copied = sa.select(replicas.c.object_key).where(replicas.c.target == self.name,
                                                        replicas.c.object_key == entries.c.object_key)
        stmt = (sa.select(entries.c.device_id, entries.c.seq, entries.c.object_key, entries.c.sha256,
                          entries.c.size)
                .where(entries.c.state == ChunkState.VERIFIED.value, entries.c.kind == "chunk",
                       entries.c.object_key.is_not(None), ~sa.exists(copied),
                       # Footage the expiry job removed is not copied again (server/services/expiry.py).
                       ~sa.exists().where(footage_retention.c.object_key == entries.c.object_key,
                                          footage_retention.c.removed_ms.is_not(None)))
                .order_by(entries.c.verified_ms, entries.c.device_id, entries.c.seq).limit(limit + len(self._failed)))
        async with self.db.read() as conn:
            rows = (await conn.execute(stmt)).all()
        return [r for r in rows if r.object_key not in self._failed][:limit]

    async def round(self) -> RoundResult:
        """Copy up to ``batch`` chunks; each copy is read back and checked before it counts."""
        result = RoundResult()
        for row in await self.pending(self.batch):
            try:
                fresh = await self._copy(row)
            except (ObjectExists, StoreUnavailable, ValueError) as exc:
                reason = str(exc) or type(exc).__name__
                self._failed[row.object_key] = reason
                result.failed[row.object_key] = reason
                log.warning("second copy of %s failed: %s", row.object_key, reason)
                continue
            if fresh:
                result.copied += 1
            else:
                result.already_there += 1
        return result

    async def _copy(self, row: Any) -> bool:
        # (1) the primary copy must still be the bytes the entry names
        primary = await self.store.get(row.object_key, self._grant())
        if primary is None:
            raise ValueError("the primary store has no object under this key")
        if hashlib.sha256(primary.data).hexdigest() != row.sha256 or len(primary.data) != row.size:
            raise ValueError("the primary copy does not match its entry (the scrubber reports it)")
        # (2) write once into the second store (the same bytes already there count)
        fresh = await self.target.put(row.object_key, primary.data, row.sha256)
        # (3) read the copy back and check it against the entry's sha256 and size
        copy = await self.target.get(row.object_key, self._grant())
        if copy is None:
            raise ValueError("the copy is not readable after writing it")
        if hashlib.sha256(copy.data).hexdigest() != row.sha256 or len(copy.data) != row.size:
            raise ValueError("the copy read back does not match its entry")
        await self.target.seal(row.object_key)
        # (4) record the verified copy
        async with self.db.write() as conn:
            await insert_ignore(conn, replicas, {
                "target": self.name, "device_id": row.device_id, "seq": row.seq, "object_key": row.object_key,
                "sha256": row.sha256, "size": row.size, "verified_ms": self.clock.now_ms()}, ["target", "object_key"])
        return fresh

    async def start(self) -> None:
        """Check the second store is usable (create its directories, check the bucket)."""
        await self.target.start()

    async def close(self) -> None:
        """Release the second store's clients."""
        await self.target.close()


async def run_replicator(config: ServerConfig, to: str, *, once: bool = False,
                         clock: Clock | None = None) -> RoundResult:
    """``custody admin replicate``: copy rounds on the server's database and store until interrupted."""
    import asyncio

    from custody.clock import SystemClock
    from server.app import make_store
    from server.datadir import DataDir
    from server.db.database import database_url

    clock = clock or SystemClock()
    datadir = DataDir(config.data_dir)
    db = Database.connect(database_url(config.database.url, datadir.sqlite_path,
                                       config.database.password.reveal() if config.database.password else None))
    store = make_store(config, datadir, clock)
    service = ReplicationService(db, clock, store, second_store(config, clock, to), to, config.replication.batch)
    total = RoundResult()
    try:
        await store.start()
        await service.start()
        # Its reads are an integrity duty like the server's own: recorded (and logged) once per process.
        from server.keyring import ServerKeyring
        from server.log.service import LogService
        from server.services.access import AccessService

        log_service = LogService(db, clock, ServerKeyring(db, datadir.keys, clock), config.log)
        await log_service.start()
        service.read_grant = await AccessService(db, clock, log_service).duty_grant("replication")
        while True:
            done = await service.round()
            total.copied += done.copied
            total.already_there += done.already_there
            total.failed.update(done.failed)
            if done.copied or done.failed:
                log.info("second copy to %s: %d copied, %d failed", service.name, done.copied, len(done.failed))
            if once:
                return total
            if not done.copied:
                await asyncio.sleep(config.replication.interval_s)
    finally:
        await service.close()
        await store.close()
        await db.close()
