"""A device that knows several server processes moves to the next when one cannot be reached, and stays there."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.client import ServerClient, Unreachable
from agent.device import DeviceAgent
from agent.media.config import MediaConfig
from custody.clock import FakeClock
from server.app import RunningServer, start_server
from tests.helpers.agent_server import delivered_entries, enrollment_token, record_and_drain
from tests.integration.server.conftest import server_config
from tests.services.ports import LOOPBACK, free_port

pytestmark = pytest.mark.integration

SMALL = MediaConfig(width=160, height=120, chunk_seconds=1, pre_event_seconds=0, video_bitrate=200_000)


@pytest.fixture
async def live_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    overrides: dict[str, Any] = {"mqtt.url": "off"}
    srv = await start_server(server_config(tmp_path / "server", **overrides))
    yield srv
    await srv.stop()


def dead_url() -> str:
    """A loopback URL nothing listens on (a server process that died)."""
    return f"http://{LOOPBACK}:{free_port()}"


async def test_requests_fail_over_in_order_and_stay_where_they_were_answered(
        live_server: RunningServer, tmp_path: Path) -> None:
    clock = FakeClock(time.time_ns() // 1_000_000)
    agent = DeviceAgent(tmp_path / "device", clock, media=SMALL)
    await agent.open()
    await agent.enroll(await enrollment_token(live_server))
    dead = dead_url()
    client = ServerClient(dead, agent.key, clock, device_id=agent.device_id,
                          fallback_urls=[live_server.url + "/", dead])
    try:
        assert client.api_urls == [dead, live_server.url]  # trailing slash and duplicates dropped
        # (1) the first URL is down: the same call, signed anew, is answered by the next one
        assert (await client.self_info())["id"] == agent.device_id
        assert client.api_url == live_server.url
        # (2) the device stays with the process that answered
        await client.self_info()
        assert client.api_url == live_server.url
    finally:
        await client.close()
    # (3) nothing answers: one try per URL, then Unreachable for the uploader's backoff
    lost = ServerClient(dead_url(), agent.key, clock, device_id=agent.device_id, fallback_urls=[dead_url()])
    try:
        with pytest.raises(Unreachable, match="/api/v1/device/self"):
            await lost.self_info()
    finally:
        await lost.close()
    await agent.close()


async def test_an_agent_delivers_through_its_fallback_server(live_server: RunningServer, tmp_path: Path) -> None:
    clock = FakeClock(time.time_ns() // 1_000_000, auto_advance=True)
    agent = DeviceAgent(tmp_path / "device", clock, media=SMALL, source_seconds=30)
    await agent.open()
    await agent.enroll(await enrollment_token(live_server))
    await agent.connect(mqtt=False, api_url=dead_url(), fallback_urls=[live_server.url])
    await record_and_drain(agent, "failover", media_ms=4_000)
    assert agent.client is not None
    assert agent.client.api_url == live_server.url
    await delivered_entries(live_server, agent)
    await agent.close()
