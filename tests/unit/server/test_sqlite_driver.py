"""Which aiosqlite calls run on the event loop and which keep the connection's thread."""

from __future__ import annotations

import sqlite3

import pytest

from server.db.sqlite_driver import _inline


@pytest.fixture
def conn() -> sqlite3.Connection:
    return sqlite3.connect(":memory:")


@pytest.mark.parametrize(("sql", "writer", "inline"), [
    ("SELECT * FROM entries", False, True),
    ("  with x as (select 1) select * from x", False, True),
    ("INSERT INTO t VALUES (1)", True, True),
    ("INSERT INTO t VALUES (1)", False, False),  # a reader's implicit BEGIN could wait for the writer
    ("SAVEPOINT sa_savepoint_1", True, True),
    ("RELEASE SAVEPOINT sa_savepoint_1", True, True),
    ("BEGIN IMMEDIATE", True, False),  # waits for the file's write lock
    ("COMMIT", True, False),  # fsync
    ("PRAGMA journal_mode=WAL", True, False),
])
def test_statements(conn: sqlite3.Connection, sql: str, writer: bool, inline: bool) -> None:
    assert _inline(conn.cursor().execute, (sql, ()), writer) is inline


def test_calls(conn: sqlite3.Connection) -> None:
    cur = conn.cursor()
    assert _inline(conn.cursor, (), False)
    assert _inline(cur.fetchall, (), False)
    assert _inline(cur.close, (), False)
    assert _inline(conn.rollback, (), True)
    assert not _inline(conn.commit, (), True)
    assert not _inline(conn.close, (), False)
    assert not _inline(conn.backup, (), False)
