"""The engine wrapper: one code path for SQLite (aiosqlite) and PostgreSQL (asyncpg).

Writes go through :meth:`Database.write`, a transaction. On PostgreSQL it is a transaction of
its own; concurrent processes rely on row locks (``SELECT ... FOR UPDATE`` on the device row)
and unique constraints.

On SQLite one process owns the file and SQLite allows one writer, so write transactions queue
here (cheaper and fairer than SQLITE_BUSY retries). A commit is durable (``synchronous=FULL``):
an fsync of a few milliseconds. One transaction at a time, each with its own fsync, was the
ceiling of the whole server (six per chunk: about 36 ms of exclusive time per chunk whatever
the number of devices). So write transactions are *group-committed*: the writers queued
together run one after another inside one SQLite transaction on the single writer connection,
each in its own SAVEPOINT (a block that raises rolls back only its own work), and one COMMIT
makes the whole group durable. No writer's block returns before that COMMIT has succeeded, and
if it fails, every writer of the group gets the error: the guarantee of :meth:`Database.write`
(committed and durable when the block ends without an exception, nothing when it raises) is
unchanged; only the fsync is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.db import sqlite_driver

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

#: TCP keepalives of PostgreSQL's side of each connection. Several server processes share one
#: database, and a transaction's row locks (the transparency log's sequencer among them) are held
#: until PostgreSQL learns that its client is gone: at once when a process dies on a running
#: machine (its sockets close), but after the operating system's default of two hours when the
#: machine itself dies or drops off the network, with every other process's ingest waiting behind
#: the sequencer. With these, a vanished client is noticed within about 25 s.
PG_KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}


def database_url(url: str | None, sqlite_path: Path, password: str | None = None) -> URL:
    """The URL to connect to: the configured one (with its password), or the data dir's SQLite file."""
    if url is None:
        return make_url(f"sqlite+aiosqlite:///{sqlite_path}")
    parsed = make_url(url)
    if password is not None:
        parsed = parsed.set(password=password)
    return parsed


def alembic_config() -> AlembicConfig:
    """Alembic configuration pointing at server/migrations (no alembic.ini needed at run time)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


class _Group:
    """Write transactions sharing one SQLite transaction and its COMMIT."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.members = 0
        self.broken: BaseException | None = None  # the SQLite transaction itself failed
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Database:
    """An async engine plus the write discipline described in the module docstring."""

    def __init__(self, engine: AsyncEngine, write_engine: AsyncEngine | None = None) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        # SQLite: one writer connection (its own engine, so that only it runs with explicit
        # BEGIN/SAVEPOINT handling) and the group being filled, guarded by the lock.
        self._write_engine = write_engine
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._writer: AsyncConnection | None = None
        self._group: _Group | None = None
        self._committers: set[asyncio.Task[None]] = set()
        # PostgreSQL reads run without a transaction: BEGIN and the ROLLBACK at the connection's
        # return were two round trips around every read block (a third of the statements the
        # chunk path sent). Nothing changes for what a read sees: at READ COMMITTED, PostgreSQL's
        # default, every statement takes its own snapshot inside a transaction too. Reads never
        # write (on SQLite a write in a read block would be rolled back at the connection's return).
        self._read_engine = engine if self.is_sqlite else engine.execution_options(isolation_level="AUTOCOMMIT")

    @classmethod
    def connect(cls, url: URL, *, pool_size: int = 5, echo: bool = False) -> Database:
        """Create the engine (no I/O yet)."""
        kwargs: dict[str, Any] = {"echo": echo}
        if url.get_backend_name() == "postgresql":
            # No pre-ping: it cost a round trip (SELECT 1) at every checkout, about ten per chunk.
            # A connection found dead mid-statement invalidates the pool instead (SQLAlchemy's
            # disconnect handling): that one request fails with a 5xx, which devices retry, and
            # the next checkouts connect afresh. Idle connections are recycled before servers or
            # proxies drop them.
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800,
                          connect_args={"server_settings": PG_KEEPALIVES})
        if url.get_backend_name() != "sqlite":
            return cls(create_async_engine(url, **kwargs))
        path = url.database or ":memory:"
        engine = create_async_engine(url, async_creator=sqlite_driver.creator(path), **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        # The driver's own implicit BEGIN breaks SAVEPOINTs: the writer runs without it
        # (isolation_level=None) and SQLAlchemy emits BEGIN IMMEDIATE itself.
        write_engine = create_async_engine(
            url, async_creator=sqlite_driver.creator(path, writer=True, isolation_level=None),
            echo=echo, pool_size=1, max_overflow=0)
        event.listen(write_engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(write_engine.sync_engine, "begin", _sqlite_begin_immediate)
        return cls(engine, write_engine)

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (safe to run from several processes at once)."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                # Two processes starting together must not both create the tables.
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7262163)"))
            await conn.run_sync(_upgrade)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed (durably) when the block ends without an exception."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        group = await self._join()
        try:
            if group.members == 0:
                # Nothing else in the transaction yet: no savepoint needed (two statements saved);
                # a failure rolls the whole transaction back and opens a fresh one for the others.
                try:
                    yield group.conn
                except BaseException:
                    try:
                        await group.conn.rollback()
                        await group.conn.begin()
                    except BaseException as exc:
                        group.broken = exc
                    raise
            else:
                savepoint = await group.conn.begin_nested()
                try:
                    yield group.conn
                except BaseException:
                    try:
                        await savepoint.rollback()
                    except BaseException as exc:  # the transaction is gone: the whole group fails
                        group.broken = exc
                    raise
                try:
                    await savepoint.commit()  # RELEASE: the work joins the group's transaction
                except BaseException as exc:
                    group.broken = exc
                    raise
        finally:
            self._leave(group)
        await asyncio.shield(group.done)  # durable, or the commit's error

    async def _join(self) -> _Group:
        """Take the writer connection; open a group unless one is being filled."""
        assert self._write_lock is not None and self._write_engine is not None
        await self._write_lock.acquire()
        try:
            if self._group is None:
                if self._writer is None:
                    self._writer = await self._write_engine.connect()
                await self._writer.begin()  # BEGIN IMMEDIATE (see _sqlite_begin_immediate)
                self._group = _Group(self._writer)
                # Queued behind the writers waiting now: they join this group, later ones the next.
                task = asyncio.get_running_loop().create_task(self._commit_when_filled(self._group))
                self._committers.add(task)
                task.add_done_callback(self._committers.discard)
            return self._group
        except BaseException:
            self._write_lock.release()
            raise

    def _leave(self, group: _Group) -> None:
        assert self._write_lock is not None
        group.members += 1
        self._write_lock.release()

    async def _commit_when_filled(self, group: _Group) -> None:
        assert self._write_lock is not None
        async with self._write_lock:
            await self._finish(group)

    async def _finish(self, group: _Group) -> None:
        """COMMIT the group (ROLLBACK if it broke) under the lock; wake its writers with the outcome."""
        if self._group is not group:
            return
        self._group = None
        try:
            if group.broken is not None:
                raise group.broken
            await asyncio.shield(group.conn.commit())
        except BaseException as exc:
            group.done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("write group cancelled"))
            await self._reset_writer()
            if not isinstance(exc, Exception):
                raise
        else:
            group.done.set_result(None)

    async def _reset_writer(self) -> None:
        """Drop the writer connection after a failed group (a fresh one is opened for the next)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.rollback()
            with contextlib.suppress(Exception):
                await writer.close()

    @contextlib.asynccontextmanager
    async def read(self, *, locking: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (no writes: see ``_read_engine``).

        ``locking``: the block takes a transaction-scoped lock (``pg_advisory_xact_lock``) and
        needs a transaction to hold it until the block ends; the transaction is rolled back then.
        """
        async with (self.engine if locking else self._read_engine).connect() as conn:
            yield conn

    def lock_device(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        """``stmt`` with a row lock where the backend has them (PostgreSQL)."""
        return stmt if self.is_sqlite else stmt.with_for_update()

    async def close(self) -> None:
        """Commit a group still being filled, then dispose of the pools."""
        if self._write_lock is not None:
            async with self._write_lock:
                if self._group is not None:
                    await self._finish(self._group)
                if self._writer is not None:
                    await self._writer.close()
                    self._writer = None
        if self._write_engine is not None:
            await self._write_engine.dispose()
        await self.engine.dispose()


def _upgrade(sync_conn: sa.Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


def _sqlite_begin_immediate(conn: sa.Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN: a writer never has to upgrade a read lock mid-way.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run while a write commits; synchronous=FULL makes a commit durable before
    # the receipt that depends on it leaves the server.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()
