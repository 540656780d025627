"""Fixtures of the server integration tests: a real server on a free loopback port, on SQLite with
the local store, or on real PostgreSQL with the real S3 endpoint (LocalStack), both from the shared
fixtures in tests/conftest.py (``postgres_db``, ``s3``, ``s3_bucket``); ``mq_server`` is one whose MQTT side
uses the test's Mosquitto; ``s3_store`` is the server's S3 store alone, on a bucket of its own."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from custody.clock import FakeClock
from server.app import RunningServer, start_server
from server.config import S3Config, Secret, ServerConfig, load_config
from server.storage.s3 import S3Store
from tests.helpers.device import Reply, SimDevice
from tests.helpers.device_mqtt import wait_for
from tests.services.mosquitto import MosquittoBroker
from tests.services.s3 import LocalStackS3

BACKENDS = ("sqlite-local", "postgres-s3")


def server_config(data_dir: Path, *, database_url: str | None = None, s3: LocalStackS3 | None = None,
                  bucket: str | None = None, **overrides: Any) -> ServerConfig:
    """A config for a test server on a free port: SQLite unless ``database_url``, local store unless ``s3``."""
    values: dict[str, Any] = {"data_dir": str(data_dir), "http.port": 0, "http.access_log": False,
                              "ingest.decode_after_receipt": True, "mqtt.embedded_port": 0}
    if database_url is not None:
        values["database.url"] = database_url
    if s3 is not None:
        assert bucket is not None
        values.update({"storage.backend": "s3", "storage.s3.endpoint_url": s3.endpoint_url,
                       "storage.s3.bucket": bucket, "storage.s3.region": s3.region,
                       "storage.s3.access_key_id": s3.access_key,
                       "storage.s3.secret_access_key": s3.secret_key, "storage.s3.retention_days": 1})
    values.update(overrides)
    return load_config(None, env={}, overrides=values)


def make_s3_store(s3: LocalStackS3, bucket: str, clock: FakeClock) -> S3Store:
    """The server's S3 store on the shared LocalStack, one day of COMPLIANCE retention (not yet started)."""
    return S3Store(S3Config(endpoint_url=s3.endpoint_url, bucket=bucket, region=s3.region,
                            access_key_id=s3.access_key, secret_access_key=Secret(s3.secret_key), retention_days=1),
                   clock)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at the real time (S3 checks presigned URLs against its own clock)."""
    return FakeClock(start_ms=time.time_ns() // 1_000_000)


@pytest.fixture
async def s3_store(s3: LocalStackS3, s3_bucket: str, clock: FakeClock) -> AsyncIterator[S3Store]:
    """A started S3 store on a fresh Object Lock bucket of its own, closed after the test."""
    store = make_s3_store(s3, s3_bucket, clock)
    await store.start()
    yield store
    await store.close()


@pytest.fixture
async def server(tmp_path: Path, clock: FakeClock) -> AsyncIterator[RunningServer]:
    """A server on SQLite and the local store."""
    srv = await start_server(server_config(tmp_path / "data"), clock)
    yield srv
    await srv.stop()


@pytest.fixture
async def mq_server(tmp_path: Path, clock: FakeClock, mosquitto: MosquittoBroker) -> AsyncIterator[RunningServer]:
    """A server on SQLite whose MQTT side uses the test's Mosquitto, its link up."""
    overrides: dict[str, Any] = {"mqtt.url": mosquitto.url}
    srv = await start_server(server_config(tmp_path / "data", **overrides), clock)
    await wait_for(lambda: srv.mqtt.link is not None and srv.mqtt.link.connected.is_set(), what="link up")
    yield srv
    await srv.stop()


@pytest.fixture(params=BACKENDS)
async def any_server(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[RunningServer]:
    """The same tests on SQLite + local store and on PostgreSQL + S3."""
    kw: dict[str, Any] = {}
    if request.param == "postgres-s3":
        kw = {"database_url": request.getfixturevalue("postgres_db").async_url, "s3": request.getfixturevalue("s3"),
              "bucket": request.getfixturevalue("s3_bucket")}
    srv = await start_server(server_config(tmp_path / "data", **kw), clock)
    yield srv
    await srv.stop()


@pytest.fixture(params=("sqlite-local", "postgres-local"))
async def local_server(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
                       ) -> AsyncIterator[RunningServer]:
    """The local store (which takes chunks with their manifest in one request) on SQLite and on PostgreSQL."""
    kw: dict[str, Any] = {}
    if request.param == "postgres-local":
        kw = {"database_url": request.getfixturevalue("postgres_db").async_url}
    srv = await start_server(server_config(tmp_path / "data", **kw), clock)
    yield srv
    await srv.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session."""
    async with aiohttp.ClientSession() as s:
        yield s


class Api:
    """An API client with a bearer token."""

    def __init__(self, url: str, session: aiohttp.ClientSession, token: str | None) -> None:
        self.url = url
        self.session = session
        self.token = token

    async def call(self, method: str, path: str, json_body: Any = None, *, raw: bytes | None = None,
                   token: str | None = "", headers: dict[str, str] | None = None) -> Reply:
        """A request; ``token=None`` sends no credentials, ``""`` this client's token."""
        tok = self.token if token == "" else token
        h = dict(headers or {})
        if tok is not None:
            h["Authorization"] = f"Bearer {tok}"
        import json as _json

        data = raw if raw is not None else (_json.dumps(json_body).encode() if json_body is not None else b"")
        if data and "Content-Type" not in h:
            h["Content-Type"] = "application/json"
        async with self.session.request(method, self.url + path, data=data, headers=h) as r:
            return Reply(r.status, await r.read(), dict(r.headers))

    async def ok(self, method: str, path: str, json_body: Any = None, status: int | None = None) -> Any:
        """A request that must succeed; its JSON."""
        r = await self.call(method, path, json_body)
        assert r.status < 300, (r.status, r.body)
        assert status is None or r.status == status, (r.status, r.body)
        return r.json

    async def user(self, name: str, role: str) -> Api:
        """A new user with ``role``, as a client."""
        data = await self.ok("POST", "/api/v1/users", {"name": name, "role": role})
        return Api(self.url, self.session, data["token"]["token"])

    async def enroll(self, clock: FakeClock, **kw: Any) -> SimDevice:
        """A new enrolled device."""
        token = (await self.ok("POST", "/api/v1/enrollment-tokens", {}))["token"]
        device = SimDevice(self.url, self.session, clock, **kw)
        await device.enroll(token)
        return device


@pytest.fixture
def admin_token(server: RunningServer) -> str:
    """The admin token written at first start."""
    return (server.services.datadir.admin_token).read_text().strip()


@pytest.fixture
def admin(server: RunningServer, session: aiohttp.ClientSession, admin_token: str) -> Api:
    """Admin API client of ``server``."""
    return Api(server.url, session, admin_token)


@pytest.fixture
def any_admin(any_server: RunningServer, session: aiohttp.ClientSession) -> Api:
    """Admin API client of ``any_server``."""
    return Api(any_server.url, session, any_server.services.datadir.admin_token.read_text().strip())


@pytest.fixture
def local_admin(local_server: RunningServer, session: aiohttp.ClientSession) -> Api:
    """Admin API client of ``local_server``."""
    return Api(local_server.url, session, local_server.services.datadir.admin_token.read_text().strip())


@pytest.fixture
def mq_admin(mq_server: RunningServer, session: aiohttp.ClientSession) -> Api:
    """Admin API client of ``mq_server``."""
    return Api(mq_server.url, session, mq_server.services.datadir.admin_token.read_text().strip())
