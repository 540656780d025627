"""Ingest's locks on PostgreSQL, where several server processes share the database.

A chunk's verification and an event of the same device both append to the transparency log (one
sequencer row for every process) and both touch the device row. Taken in different orders they
deadlocked: PostgreSQL broke the tie after its deadlock timeout by failing one of them (a 500 the
device retried), and the sequencer lock sat held meanwhile, stalling ingest in every process.
One chunk verified by two processes at once (a device repeating its request on another) must get
one receipt and one log leaf: the entry's row lock, not any process's memory, decides.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from custody.clock import FakeClock
from server.app import start_server
from server.db.schema import log_leaves
from tests.helpers.device import SimDevice
from tests.helpers.media import make_chunk
from tests.integration.server.conftest import Api, server_config

pytestmark = pytest.mark.integration

ROUNDS = 30  # before the fix about one round in three deadlocked


async def test_verifying_while_the_device_announces_an_event_never_deadlocks(
        tmp_path: Path, clock: FakeClock, session: aiohttp.ClientSession, request: pytest.FixtureRequest) -> None:
    overrides: dict[str, Any] = {"mqtt.url": "off", "database.url": request.getfixturevalue("postgres_db").async_url,
                                 "ingest.decode_after_receipt": False}
    srv = await start_server(server_config(tmp_path / "data", **overrides), clock)
    try:
        api = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
        device = await api.enroll(clock)
        chunks = [make_chunk(seed=n) for n in range(3)]
        assert (await device.announce(device.event("start"))).status == 201
        failed = []
        for n in range(ROUNDS):
            chunk = chunks[n % len(chunks)]
            seq = device.seq
            announced = await device.announce(device.manifest(chunk))
            assert announced.status == 201, announced.body
            assert (await device.put(announced.json["upload"], chunk.data)).status in (200, 201)
            event = device.event("stop" if n % 2 == 0 else "start")
            verified, logged = await asyncio.gather(device.verify(seq), device.announce(event))
            if (verified.status, logged.status) != (200, 201):
                failed.append((n, verified.status, verified.code, logged.status, logged.code))
        assert failed == []
        entries = await srv.services.ingest.list_entries(device.device_id, 0, 1000)
        assert [e["seq"] for e in entries] == list(range(2 * ROUNDS + 1))
        assert {e["state"] for e in entries} == {"verified"}
    finally:
        await srv.stop()


async def test_two_processes_verifying_one_chunk_at_once_sign_one_receipt(
        tmp_path: Path, clock: FakeClock, session: aiohttp.ClientSession, request: pytest.FixtureRequest) -> None:
    """A device that repeats its verify on another process while the first still works gets the same receipt."""
    overrides: dict[str, Any] = {"mqtt.url": "off", "database.url": request.getfixturevalue("postgres_db").async_url,
                                 "ingest.decode_after_receipt": False}
    servers = [await start_server(server_config(tmp_path / "data", **overrides), clock) for _ in range(2)]
    try:
        api = Api(servers[0].url, session, servers[0].services.datadir.admin_token.read_text().strip())
        device = await api.enroll(clock)
        other = SimDevice(servers[1].url, session, clock, key=device.key)  # the same device, the other URL
        chunks = [make_chunk(seed=n) for n in range(3)]
        for n in range(10):
            chunk = chunks[n % len(chunks)]
            seq = device.seq
            announced = await device.announce(device.manifest(chunk))
            assert (await device.put(announced.json["upload"], chunk.data)).status in (200, 201)
            first, second = await asyncio.gather(device.verify(seq), other.verify(seq))
            assert (first.status, second.status) == (200, 200), (first.body, second.body)
            assert first.json["receipt"] == second.json["receipt"]
        async with servers[1].services.db.read() as conn:
            subjects = (await conn.execute(sa.select(log_leaves.c.subject).where(
                log_leaves.c.subject.like(f"entry:{device.device_id}:%")))).scalars().all()
        assert sorted(subjects) == sorted(f"entry:{device.device_id}:{n}" for n in range(10))
    finally:
        for srv in servers:
            await srv.stop()
