"""Two server processes on one database scrub different chunks: a round claims its chunks before reading them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from custody.clock import FakeClock
from server.app import start_server
from tests.integration.server.conftest import Api, server_config

pytestmark = pytest.mark.integration


async def test_two_scrubbers_share_the_work(tmp_path: Path, clock: FakeClock, session: aiohttp.ClientSession,
                                            request: pytest.FixtureRequest) -> None:
    shared: dict[str, Any] = {"mqtt.url": "off", "scrub.enabled": False,  # the test drives the rounds
                              "database.url": request.getfixturevalue("postgres_db").async_url}
    servers = [await start_server(server_config(tmp_path / "data", **shared), clock) for _ in range(2)]
    try:
        api = Api(servers[0].url, session, servers[0].services.datadir.admin_token.read_text().strip())
        device = await api.enroll(clock)
        delivered = [f"{device.device_id}/{(await device.deliver())['seq']}" for _ in range(6)]
        # A budget of one byte is one chunk a round; three rounds in each process, all at once.
        reports = await asyncio.gather(*(srv.services.scrubber.run_once(1) for srv in servers for _ in range(3)))
        checked = [key for r in reports for key in r.results]
        assert sorted(checked) == sorted(delivered), "each chunk checked once, by one process"
        assert {result for r in reports for result in r.results.values()} == {"ok"}
    finally:
        for srv in servers:
            await srv.stop()
