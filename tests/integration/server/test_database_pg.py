"""PostgreSQL connections of a server process ask the database to notice a vanished client in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from server.db.database import PG_KEEPALIVES, Database, database_url

pytestmark = pytest.mark.integration


async def test_connections_carry_tcp_keepalives(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    db = Database.connect(database_url(request.getfixturevalue("postgres_db").async_url, tmp_path))
    try:
        async with db.read() as conn:
            found = {name: (await conn.execute(sa.text(f"SHOW {name}"))).scalar_one() for name in PG_KEEPALIVES}
        # PostgreSQL reports the values it applies to this connection's socket (in seconds, as set).
        assert found == PG_KEEPALIVES
        idle, interval, count = (int(PG_KEEPALIVES[k]) for k in ("tcp_keepalives_idle", "tcp_keepalives_interval",
                                                                "tcp_keepalives_count"))
        assert idle + interval * count <= 30  # a dead machine's locks are released within half a minute
    finally:
        await db.close()
