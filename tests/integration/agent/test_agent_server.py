"""The agent's own classes against a real server: enroll, record while uploading, receipts free the buffer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.device import DeviceAgent
from agent.media.config import MediaConfig
from custody.clock import FakeClock
from server.app import RunningServer, start_server
from tests.helpers.agent_server import delivered_entries, enrollment_token, record_and_drain, server_entries
from tests.integration.server.conftest import server_config

pytestmark = pytest.mark.integration

SMALL = MediaConfig(width=160, height=120, chunk_seconds=1, pre_event_seconds=2, video_bitrate=200_000)


@pytest.fixture
async def live_server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    srv = await start_server(server_config(tmp_path / "server"))
    yield srv
    await srv.stop()


async def test_recordings_upload_while_recording_and_every_chunk_gets_a_receipt(
    live_server: RunningServer, tmp_path: Path
) -> None:
    clock = FakeClock(time.time_ns() // 1_000_000, auto_advance=True)
    agent = DeviceAgent(tmp_path / "device", clock, media=SMALL, source_seconds=60)
    await agent.open()
    await agent.enroll(await enrollment_token(live_server))
    await agent.connect(mqtt=False)
    await record_and_drain(agent, "test-0", "test-1", "test-2", media_ms=8_000)
    assert agent.buffer.entries() == []  # every local copy freed after its receipt
    entries = await delivered_entries(live_server, agent)
    events = [(e["event"], e["recording_id"]) for e in entries if e["kind"] == "event"]
    assert [ev for ev, _ in events] == ["start", "stop"] * 3
    # Pre-event footage of the first recording (2 s) came before the live chunks.
    chunks = [e for e in entries if e["kind"] == "chunk"]
    assert len(chunks) >= 3 * 5
    # After the first announce answer said so, chunks went in one request with their manifest
    # (only those already in flight before that answer were announced first).
    assert agent.uploader is not None
    assert agent.uploader.stats.direct >= len(chunks) - agent.uploader.concurrency
    await agent.close()


async def test_restart_mid_upload_resumes_and_the_chain_continues(live_server: RunningServer, tmp_path: Path) -> None:
    clock = FakeClock(time.time_ns() // 1_000_000, auto_advance=True)
    data = tmp_path / "device"
    agent = DeviceAgent(data, clock, media=SMALL, source_seconds=30)
    await agent.open()
    await agent.enroll(await enrollment_token(live_server))
    # Record with no server connection: everything stays buffered.
    await agent.start_recording()
    assert agent.recorder is not None
    await agent.recorder.wait_media_ms(5_000)
    await agent.stop_recording()
    held = len(agent.buffer.entries())
    assert held >= 5
    await agent.close()
    # A new process: it finds its buffer, connects, and delivers everything.
    agent2 = DeviceAgent(data, clock, media=SMALL, source_seconds=30)
    report = await agent2.open()
    assert report.committed == held
    await agent2.connect(mqtt=False)
    assert agent2.uploader is not None
    assert await agent2.uploader.drained()
    entries = await server_entries(live_server, agent2.device_id)
    assert len(entries) == held
    assert {e["state"] for e in entries} == {"verified"}
    await agent2.close()


async def test_a_receipt_that_freed_its_entry_is_not_checked_again(
    live_server: RunningServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each receipt comes twice (HTTP answer and MQTT): the second copy is recognised by its bytes."""
    clock = FakeClock(time.time_ns() // 1_000_000, auto_advance=True)
    agent = DeviceAgent(tmp_path / "device", clock, media=SMALL, source_seconds=60)
    await agent.open()
    try:
        await agent.enroll(await enrollment_token(live_server))
        await agent.connect(mqtt=False)
        await record_and_drain(agent, "test", media_ms=3_000)
        assert agent.uploader is not None and agent.client is not None
        head = agent.buffer.head_seq
        assert head is not None
        receipt = str((await agent.client.entry(head))["receipt"]).encode("ascii")

        def checked_again(*args: object, **kwargs: object) -> None:
            raise AssertionError("a receipt already taken was parsed and verified again")

        monkeypatch.setattr(agent.buffer, "accept_receipt", checked_again)
        assert agent.uploader.accept(receipt) is None
    finally:
        await agent.close()
