"""Fixtures of the tamper-evidence tests: a server with a recorded, receipted history to export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from custody.clock import FakeClock
from server.app import RunningServer, start_server
from tests.helpers.device import SimDevice
from tests.helpers.media import make_chunk
from tests.integration.server.conftest import Api, server_config
from tests.integration.server.conftest import clock as clock  # the same fixtures as the server tests
from tests.integration.server.conftest import session as session


@dataclass
class Recorded:
    """A device's recording as the tests know it."""

    device: SimDevice
    recording_id: str
    seqs: list[int]


async def record(device: SimDevice, chunks: int, *, seed: int = 0) -> Recorded:
    """A whole recording: start, ``chunks`` chunks, stop; every entry receipted."""
    device.recording_id = f"rec-{device.seq:04d}-{seed}"
    device.index = 0
    first = device.seq
    start = await device.announce(device.event("start"))
    assert start.status in (200, 201), start.body
    for i in range(chunks):
        await device.deliver(make_chunk(seed=seed * 10 + i))
    stop = await device.announce(device.event("stop"))
    assert stop.status in (200, 201), stop.body
    return Recorded(device, device.recording_id, list(range(first, device.seq)))


@pytest.fixture
async def log_server(tmp_path: Path, clock: FakeClock) -> AsyncIterator[RunningServer]:
    """A server on SQLite and the local store, with the background scrubber off (tests drive it)."""
    overrides: dict[str, Any] = {"scrub.enabled": False}
    srv = await start_server(server_config(tmp_path / "data", **overrides), clock)
    yield srv
    await srv.stop()


@pytest.fixture
def log_admin(log_server: RunningServer, session: aiohttp.ClientSession) -> Api:
    """Admin API client of ``log_server``."""
    return Api(log_server.url, session, log_server.services.datadir.admin_token.read_text().strip())
