"""The engine wrapper: one code path for SQLite (aiosqlite) and PostgreSQL (asyncpg).

Writes go through :meth:`Database.write`, a transaction. On SQLite, one process owns the file
and an asyncio lock serializes write transactions (SQLite allows one writer; queueing here is
cheaper and fairer than SQLITE_BUSY retries). On PostgreSQL, concurrent processes rely on row
locks (``SELECT ... FOR UPDATE`` on the device row) and unique constraints.
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

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


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


class Database:
    """An async engine plus the write discipline described in the module docstring."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @classmethod
    def connect(cls, url: URL, *, pool_size: int = 5, echo: bool = False) -> Database:
        """Create the engine (no I/O yet)."""
        kwargs: dict[str, Any] = {"echo": echo}
        if url.get_backend_name() == "postgresql":
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        engine = create_async_engine(url, **kwargs)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return cls(engine)

    async def migrate(self) -> None:
        """Bring the schema to the newest migration (safe to run from several processes at once)."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                # Two processes starting together must not both create the tables.
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(7262163)"))
            await conn.run_sync(_upgrade)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed when the block ends without an exception."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads."""
        async with self.engine.connect() as conn:
            yield conn

    def lock_device(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        """``stmt`` with a row lock where the backend has them (PostgreSQL)."""
        return stmt if self.is_sqlite else stmt.with_for_update()

    async def close(self) -> None:
        """Dispose of the pool."""
        await self.engine.dispose()


def _upgrade(sync_conn: sa.Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run while a write commits; synchronous=FULL makes a commit durable before
    # the receipt that depends on it leaves the server.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()
