"""Alembic migrations build exactly the schema of server/db/schema.py, on both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from server.db.database import Database, database_url
from server.db.schema import metadata

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migrations_match_the_metadata(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = database_url(None, tmp_path / "m.sqlite3")
    else:
        url = database_url(request.getfixturevalue("postgres_db").async_url, tmp_path)
    db = Database.connect(url)
    try:
        await db.migrate()
        await db.migrate()  # a second start finds nothing to do

        def diff(sync_conn: Any) -> Any:
            return compare_metadata(MigrationContext.configure(sync_conn, opts={"compare_type": True}), metadata)

        async with db.engine.connect() as conn:
            differences = await conn.run_sync(diff)
            tables = await conn.run_sync(lambda c: set(__import__("sqlalchemy").inspect(c).get_table_names()))
        assert differences == []
        assert set(metadata.tables) <= tables
        assert "alembic_version" in tables
    finally:
        await db.close()
