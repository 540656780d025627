"""aiosqlite connections whose quick calls run on the event loop thread, not on aiosqlite's own.

Why: aiosqlite sends every call (cursor, execute, fetchall, close: four per statement) to its
connection's thread and back. Each round trip costs far more CPU (thread wake-ups, GIL
hand-offs, the loop's self-pipe) than the indexed statement it carries, which takes tens of
microseconds: about 150 round trips a chunk made them a large part of the server's CPU. So
reads run inline, and so do writes on the writer connection, which holds the file's write lock
from its BEGIN IMMEDIATE on. What can wait on something outside this process still goes to the
thread, so the loop never waits on a lock or a disk: BEGIN IMMEDIATE (the write lock), COMMIT
(fsync, and a WAL checkpoint now and then), PRAGMAs, connect and close, and any write on a
reader connection (its implicit BEGIN would wait for the writer).

Safe because: one process owns the database file (server/db/database.py), SQLAlchemy's pool
hands each connection to one user at a time, the single writer connection is used under the
write lock, and in WAL mode readers never wait for the writer. Python's sqlite3 is built
threadsafe (serialized), and ``check_same_thread=False`` only lifts the module's own check.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any

import aiosqlite

#: Statements that read: quick on any connection (in WAL mode a reader never waits for the writer).
_READS = ("SELECT", "WITH")
#: Statements that are quick on the writer connection, which holds the write lock from BEGIN IMMEDIATE.
_WRITER_ONLY = ("INSERT", "UPDATE", "DELETE", "SAVEPOINT", "RELEASE", "ROLLBACK")
#: Calls that never touch the disk or a lock.
_QUICK_CALLS = frozenset({"cursor", "fetchall", "fetchone", "fetchmany", "rollback"})


def _inline(fn: Callable[..., Any], args: tuple[Any, ...], writer: bool) -> bool:
    name = getattr(fn, "__name__", None)
    if name == "close":
        return isinstance(getattr(fn, "__self__", None), sqlite3.Cursor)
    if name in ("execute", "executemany"):
        if not args or not isinstance(args[0], str):
            return False
        verb = args[0].lstrip()[:9].upper()
        return verb.startswith(_READS) or (writer and verb.startswith(_WRITER_ONLY))
    # BEGIN, COMMIT, PRAGMA, connect, and whatever else aiosqlite runs keep its thread.
    return name in _QUICK_CALLS


class InlineConnection(aiosqlite.Connection):
    """An aiosqlite connection that runs quick calls inline (see the module docstring)."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], *, writer: bool) -> None:
        super().__init__(connector, 64)
        self._writer = writer

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._connection is not None and _inline(fn, args, self._writer):
            return fn(*args, **kwargs)
        return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]


def creator(database: str, *, writer: bool = False, **kwargs: Any) -> Callable[[], InlineConnection]:
    """An ``async_creator`` for SQLAlchemy's aiosqlite dialect, opening ``database`` with sqlite3 ``kwargs``.

    ``writer``: the connection only ever writes inside BEGIN IMMEDIATE (Database's writer).
    """

    def create() -> InlineConnection:
        conn = InlineConnection(partial(sqlite3.connect, database, check_same_thread=False, **kwargs), writer=writer)
        conn._thread.daemon = True  # as SQLAlchemy's dialect does for aiosqlite's own connections
        return conn

    return create


if not callable(getattr(aiosqlite.Connection, "_execute", None)):  # pragma: no cover - guards an upgrade
    raise ImportError("aiosqlite.Connection._execute is gone: server/db/sqlite_driver.py needs updating")
