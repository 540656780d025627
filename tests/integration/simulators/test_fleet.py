"""A replayed fleet on one event loop: every replayed chunk is unique, signed, verified and receipted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from custody.clock import ScaledClock
from server.app import start_server
from simulators.fleet import Fleet
from tests.integration.server.conftest import server_config

pytestmark = pytest.mark.integration


async def test_replayed_fleet_delivers_every_chunk_once(tmp_path: Path) -> None:
    clock = ScaledClock(20)  # 30 s of footage per device in about 1.5 s
    srv = await start_server(server_config(tmp_path / "server"), clock)
    admin = srv.services.datadir.admin_token.read_text().strip()
    fleet = Fleet(tmp_path / "fleet", clock, 6)
    try:
        async with aiohttp.ClientSession() as s:
            tokens = []
            for _ in fleet.devices:
                async with s.post(srv.url + "/api/v1/enrollment-tokens", json={},
                                  headers={"Authorization": f"Bearer {admin}"}) as r:
                    tokens.append((await r.json())["token"])
        await fleet.open(tokens, mqtt=False)
        await asyncio.gather(*(d.record(30) for d in fleet.devices))
        for d in fleet.devices:
            assert d.agent.uploader is not None
            assert await d.agent.uploader.drained()
        hashes: set[str] = set()
        for d in fleet.devices:
            entries = await srv.services.ingest.list_entries(d.device_id, 0, 1000)
            assert {e["state"] for e in entries} == {"verified"}
            chunks = [e for e in entries if e["kind"] == "chunk"]
            assert len(chunks) == 6  # 30 s of 5 s chunks
            hashes |= {str(e["sha256"]) for e in chunks}
        assert len(hashes) == 6 * 6, "every replayed chunk must have its own sha256"
    finally:
        await fleet.close()
        await srv.stop()
