"""A verified chunk whose first-keyframe decode was queued in a process that died is decoded by another.

The decode after the receipt runs from an in-memory queue of the process that verified the chunk;
with several processes on one database, the survivors' sweep queues what a dead one left undone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from custody.clock import FakeClock
from server.app import DECODE_ORPHAN_S, RunningServer, start_server
from server.db.schema import entries
from tests.integration.server.conftest import Api, server_config

pytestmark = pytest.mark.integration


async def decode_of(srv: RunningServer, device_id: str, seq: int) -> str | None:
    async with srv.services.db.read() as conn:
        value: str | None = (await conn.execute(sa.select(entries.c.decode).where(
            entries.c.device_id == device_id, entries.c.seq == seq))).scalar_one()
    return value


async def test_a_survivor_decodes_what_a_dead_process_left_in_its_queue(
        tmp_path: Path, clock: FakeClock, session: aiohttp.ClientSession, request: pytest.FixtureRequest) -> None:
    shared: dict[str, Any] = {"mqtt.url": "off", "database.url": request.getfixturevalue("postgres_db").async_url}
    survivor = await start_server(server_config(tmp_path / "data", **shared), clock)
    # The process that verifies and then "dies" before decoding: it never decodes at all.
    no_decode: dict[str, Any] = {**shared, "ingest.decode_after_receipt": False}
    doomed = await start_server(server_config(tmp_path / "data", **no_decode), clock)
    try:
        api = Api(doomed.url, session, doomed.services.datadir.admin_token.read_text().strip())
        device = await api.enroll(clock)
        seq = (await device.deliver())["seq"]
        await doomed.stop()
        # (1) within the grace a recent chunk is not another process's orphan (its own process may be on it)
        assert await survivor.services.ingest.pending_decodes(
            verified_before_ms=clock.now_ms() - int(DECODE_ORPHAN_S * 1000)) == []
        assert await decode_of(survivor, device.device_id, seq) is None
        # (2) past it, the survivor's sweep queues and decodes it
        clock.advance(DECODE_ORPHAN_S + 1)
        async with asyncio.timeout(20):
            while await decode_of(survivor, device.device_id, seq) is None:
                await asyncio.sleep(0.05)
        assert await decode_of(survivor, device.device_id, seq) == "ok"
    finally:
        await survivor.stop()
