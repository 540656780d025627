"""Database.write keeps its promise on SQLite where concurrent writers share one COMMIT (group commit):
each block is all or nothing, and no block returns before its work is durable."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from server.db.database import Database, database_url

pytestmark = pytest.mark.integration

items = sa.Table("items", sa.MetaData(), sa.Column("n", sa.Integer, primary_key=True))


class Refused(Exception):
    """A writer's own failure, after it wrote."""


async def open_db(path: Path) -> Database:
    db = Database.connect(database_url(None, path))
    async with db.engine.begin() as conn:
        await conn.run_sync(items.metadata.create_all)
    return db


async def committed(path: Path) -> set[int]:
    """Rows as a fresh connection (another reader) sees them."""
    other = Database.connect(database_url(None, path))
    try:
        async with other.read() as conn:
            return {r.n for r in (await conn.execute(sa.select(items.c.n))).all()}
    finally:
        await other.close()


async def test_concurrent_writers_are_each_all_or_nothing_and_durable_on_return(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    db = await open_db(path)
    seen_on_return: dict[int, bool] = {}

    async def writer(n: int) -> None:
        async with db.write() as conn:
            await conn.execute(items.insert().values(n=n))
            await conn.execute(items.insert().values(n=1000 + n))
            await asyncio.sleep(0)  # let the others queue up behind this one
            if n % 3 == 0:
                raise Refused(n)
        seen_on_return[n] = n in await committed(path)

    try:
        results = await asyncio.gather(*(writer(n) for n in range(30)), return_exceptions=True)
    finally:
        await db.close()
    refused = {n for n, r in enumerate(results) if isinstance(r, Refused)}
    assert refused == {n for n in range(30) if n % 3 == 0}
    assert all(r is None for n, r in enumerate(results) if n not in refused)
    assert all(seen_on_return.values()) and len(seen_on_return) == 20
    ok = set(range(30)) - refused
    assert await committed(path) == ok | {1000 + n for n in ok}


async def test_a_failed_statement_rolls_back_only_its_own_block(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite3"
    db = await open_db(path)

    async def writer(n: int) -> None:
        async with db.write() as conn:
            await conn.execute(items.insert().values(n=n))
            await conn.execute(items.insert().values(n=7))  # a duplicate key for all but the first

    try:
        results = await asyncio.gather(*(writer(n) for n in range(100, 110)), return_exceptions=True)
        async with db.write() as conn:  # the writer connection is still usable afterwards
            await conn.execute(items.insert().values(n=1))
    finally:
        await db.close()
    failed = [r for r in results if isinstance(r, sa.exc.IntegrityError)]
    assert len(failed) == 9 and sum(r is None for r in results) == 1
    winner = 100 + [r is None for r in results].index(True)
    assert await committed(path) == {winner, 7, 1}
