"""The few statements SQLite and PostgreSQL spell differently, behind one function each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

# Built once per (dialect, table, conflict columns): constructing the statement and its cache key
# on every call cost about twice what executing it does (request nonces, findings: every chunk).
# The values travel as execution parameters, so one statement serves any values.
_INSERT_IGNORE: dict[tuple[str, str, tuple[str, ...]], Any] = {}


def _insert_ignore_stmt(dialect: str, table: sa.Table, conflict_columns: Sequence[str]) -> Any:
    key = (dialect, table.name, tuple(conflict_columns))
    stmt = _INSERT_IGNORE.get(key)
    if stmt is None:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = _INSERT_IGNORE[key] = insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))
    return stmt


async def insert_ignore(conn: AsyncConnection, table: sa.Table, values: dict[str, Any],
                        conflict_columns: Sequence[str]) -> bool:
    """INSERT unless a row with the same ``conflict_columns`` exists; True when a row was inserted.

    A unique constraint decides, so concurrent processes cannot both insert (the replay check).
    """
    result = await conn.execute(_insert_ignore_stmt(conn.dialect.name, table, conflict_columns), values)
    return bool(result.rowcount)
