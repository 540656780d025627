"""The few statements SQLite and PostgreSQL spell differently, behind one function each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


async def insert_ignore(conn: AsyncConnection, table: sa.Table, values: dict[str, Any],
                        conflict_columns: Sequence[str]) -> bool:
    """INSERT unless a row with the same ``conflict_columns`` exists; True when a row was inserted.

    A unique constraint decides, so concurrent processes cannot both insert (the replay check).
    """
    if conn.dialect.name == "postgresql":
        stmt: Any = postgresql.insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict_columns)
    else:
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing(index_elements=conflict_columns)
    result = await conn.execute(stmt)
    return bool(result.rowcount)
