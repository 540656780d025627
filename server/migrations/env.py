"""Alembic environment: runs on the connection the server hands in (see server.db.database).

For authoring a new migration, point Alembic at a scratch database:
``CUSTODY_DATABASE_URL=sqlite:///scratch.db alembic -c server/migrations/alembic.ini revision --autogenerate -m ...``
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from server.db.schema import metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds tables, so migrations stay portable.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # command-line use, for authoring migrations
    engine = sa.create_engine(os.environ["CUSTODY_DATABASE_URL"])
    with engine.begin() as conn:
        _run(conn)
