"""Fixtures shared by the whole suite: real services for integration tests.

Every service runs as a child process on a free 127.0.0.1 port picked at start, so test sessions
(and pytest-xdist workers later) can run side by side. A service is started only when a test asks
for its fixture. A service that cannot start makes the test ERROR, never skip: a silently skipped
integration test would hide exactly the failures these tests exist for.

- ``mosquitto`` (per test): a started broker; ``mosquitto_factory`` for more, with custom config.
- ``postgres`` (per session): a throwaway cluster; ``postgres_db`` (per test): a fresh database in it.
- ``s3`` (per session, LocalStack, slow to start): ``s3_bucket`` (per test): a fresh Object Lock bucket.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.mosquitto import MosquittoBroker, MosquittoFactory, new_workdir
from tests.services.postgres import PostgresDatabase, PostgresServer
from tests.services.s3 import LocalStackS3

# Start-up times, printed at the end of the run so regressions in fixture cost are visible.
_START_TIMES: list[tuple[str, float]] = []


def _record(name: str, seconds: float | None) -> None:
    if seconds is not None:
        _START_TIMES.append((name, seconds))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print how long each kind of service took to start (first, and slowest, start)."""
    if not _START_TIMES:
        return
    by_name: dict[str, list[float]] = {}
    for name, seconds in _START_TIMES:
        by_name.setdefault(name, []).append(seconds)
    parts = [
        f"{name} {times[0]:.2f} s" + (f" (x{len(times)}, max {max(times):.2f} s)" if len(times) > 1 else "")
        for name, times in by_name.items()
    ]
    terminalreporter.write_line("service start-up: " + ", ".join(parts))


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide directory for service configs, data and logs (kept by pytest for post-mortems)."""
    return tmp_path_factory.mktemp("services")


# -- Mosquitto ---------------------------------------------------------------------------------


@pytest.fixture
def mosquitto_factory(services_dir: Path) -> Iterator[MosquittoFactory]:
    """Start extra brokers: ``mosquitto_factory(extra_config="", *, allow_anonymous=True)``.

    Each call starts a new broker on its own port and returns it started; all are stopped after the
    test. Use it for brokers with password files, ACLs or extra listeners.
    """
    brokers: list[MosquittoBroker] = []

    def start(extra_config: str = "", *, allow_anonymous: bool = True) -> MosquittoBroker:
        broker = MosquittoBroker(new_workdir(services_dir), extra_config=extra_config, allow_anonymous=allow_anonymous)
        brokers.append(broker)
        broker.start()
        _record("mosquitto", broker.start_seconds)
        return broker

    yield start
    for broker in brokers:
        broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: MosquittoFactory) -> MosquittoBroker:
    """A started anonymous broker for this test alone (it starts in well under a second).

    Per test, not per session, so a test that stops or restarts it, or leaves retained messages
    behind, cannot affect another.
    """
    return mosquitto_factory()


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster for the session: ``.dsn``, ``.async_url``, ``.create_database()``."""
    server = PostgresServer()
    try:
        server.start()
        _record("postgres", server.start_seconds)
        yield server
    finally:
        server.stop()


def _database_name(nodeid: str) -> str:
    # Readable prefix for post-mortems, hash for uniqueness; PostgreSQL names are at most 63 bytes.
    slug = re.sub(r"[^a-z0-9]+", "_", nodeid.rsplit("::", 1)[-1].lower()).strip("_")[:40]
    digest = hashlib.sha256(nodeid.encode()).hexdigest()[:12]
    return f"t_{slug}_{digest}"


@pytest.fixture
def postgres_db(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[PostgresDatabase]:
    """A fresh, empty database for this test, dropped afterwards (even with clients still connected)."""
    name = _database_name(request.node.nodeid)
    postgres.drop_database(name)  # left over from an interrupted run of the same test
    async_url = postgres.create_database(name)
    yield PostgresDatabase(name=name, dsn=postgres.dsn_for(name), async_url=async_url)
    postgres.drop_database(name)


# -- S3 (LocalStack) ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3(services_dir: Path) -> Iterator[LocalStackS3]:
    """LocalStack S3 for the session (started on first use; takes seconds and ~500 MB).

    ``.endpoint_url``, ``.region``, ``.access_key``, ``.secret_key``, ``.client()``,
    ``.make_bucket(object_lock=True) -> str``. Tests share the endpoint, so each makes its own buckets.
    """
    server = LocalStackS3(services_dir / "localstack")
    try:
        server.start()
        _record("localstack-s3", server.start_seconds)
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3: LocalStackS3) -> str:
    """Name of a new, empty, versioned bucket with Object Lock enabled, for this test alone."""
    return s3.make_bucket(object_lock=True)
