"""Device and service in sync through faults, with the real Mosquitto and the real server.

Each scenario records with the agent's own classes (replayed 1 s chunks, every one signed and
unique), breaks something while it records, and ends with the same checks: every chunk the agent
recorded is verified on the server exactly once, none lost, none duplicated, the agent's buffer is
empty, and no chain-gap finding is left open (gaps seen while things were down closed themselves).
Outages last ``CUSTODY_FAULT_SECONDS`` (5 s here; `make fault-test` runs them for 30 s).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import pytest

from agent.device import DeviceAgent
from agent.media.config import MediaConfig
from custody.clock import ScaledClock
from protocol.topics import DeviceTopic, device_topic
from server.app import RunningServer, start_server
from simulators.replay import ReplayRecorder, templates
from tests.integration.server.conftest import server_config
from tests.services.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

OUTAGE_S = float(os.environ.get("CUSTODY_FAULT_SECONDS", "5"))
SPEED = 4.0  # simulated seconds per real second: 1 s chunks arrive 4 times a second
SUMMARY = Path(os.environ.get("CUSTODY_ARTIFACTS", "test-artifacts")) / "fault-counts.json"


@dataclass
class Harness:
    srv: RunningServer
    broker: MosquittoBroker
    clock: ScaledClock
    root: Path
    port: int

    async def restart_server(self, down_s: float) -> None:
        await self.srv.stop()
        await asyncio.sleep(down_s)
        self.srv = await start_server(self.config(), self.clock)

    def config(self) -> Any:
        overrides: dict[str, Any] = {"http.port": self.port, "mqtt.url": self.broker.url,
                                     "mqtt.shared_subscriptions": False}
        return server_config(self.root / "server", **overrides)

    async def token(self) -> str:
        admin = self.srv.services.datadir.admin_token.read_text().strip()
        async with aiohttp.ClientSession() as s, s.post(self.srv.url + "/api/v1/enrollment-tokens", json={},
                                                        headers={"Authorization": f"Bearer {admin}"}) as r:
            return str((await r.json())["token"])

    def agent(self) -> DeviceAgent:
        chunks = templates(width=160, height=120, bitrate=200_000, chunk_seconds=1, count=3)

        def factory(sink: Any, device_id: str, officer: str | None) -> ReplayRecorder:
            return ReplayRecorder(chunks, self.clock, sink, device_id)

        return DeviceAgent(self.root / "device", self.clock, media=MediaConfig(width=160, height=120),
                           recorder_factory=factory)


@pytest.fixture
async def harness(tmp_path: Path, mosquitto: MosquittoBroker) -> AsyncIterator[Harness]:
    from tests.services.ports import free_port

    clock = ScaledClock(SPEED)
    port = free_port()
    h = Harness(None, mosquitto, clock, tmp_path, port)  # type: ignore[arg-type]
    h.srv = await start_server(h.config(), clock)
    yield h
    await h.srv.stop()


async def settle(h: Harness, agent: DeviceAgent, *, limit_s: float = 90) -> dict[str, Any]:
    """Wait until every entry is receipted and freed, then check the server holds each exactly once."""
    assert agent.uploader is not None
    async with asyncio.timeout(limit_s):
        while agent.buffer.entries():
            agent.uploader.wake()
            await asyncio.sleep(0.2)
    head = agent.buffer.head_seq
    assert head is not None
    entries = await h.srv.services.ingest.list_entries(agent.device_id, 0, 100_000)
    assert [e["seq"] for e in entries] == list(range(head + 1)), "lost or duplicated entries"
    assert {e["state"] for e in entries} == {"verified"}
    # Gaps that opened while things were down must have closed themselves.
    async with asyncio.timeout(30):
        while True:
            open_gaps = await h.srv.services.findings.list_findings(device_id=agent.device_id, code="chain.gap",
                                                                    open_only=True)
            if not open_gaps:
                break
            await asyncio.sleep(0.2)
    closed = await h.srv.services.findings.list_findings(device_id=agent.device_id, code="chain.gap")
    return {"entries": len(entries), "chunks": sum(1 for e in entries if e["kind"] == "chunk"),
            "via_mqtt": sum(1 for e in entries if e["source"] == "mqtt"), "gaps_closed": len(closed),
            "upload_retries": agent.uploader.stats.retries}


async def record_through(h: Harness, fault: Callable[[DeviceAgent], Awaitable[None]], *, name: str) -> dict[str, Any]:
    agent = h.agent()
    await agent.open()
    await agent.enroll(await h.token())
    await agent.connect(mqtt=True)
    assert agent.mqtt is not None
    async with asyncio.timeout(20):
        await agent.mqtt.connected.wait()
    await agent.start_recording(reason=name)
    await asyncio.sleep(1.0)
    await fault(agent)
    await asyncio.sleep(1.0)
    await agent.stop_recording(reason=name)
    counts = await settle(h, agent)
    await agent.close()
    counts["scenario"] = name
    _report(counts)
    return counts


def _report(counts: dict[str, Any]) -> None:
    SUMMARY.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
    data[counts["scenario"]] = counts
    SUMMARY.write_text(json.dumps(data, indent=1))
    print(f"\nfault scenario {counts['scenario']}: {json.dumps(counts)}")


async def test_broker_down(harness: Harness) -> None:
    async def fault(agent: DeviceAgent) -> None:
        harness.broker.stop()
        await asyncio.sleep(OUTAGE_S)
        harness.broker.start()

    counts = await record_through(harness, fault, name="broker_down")
    assert counts["chunks"] >= OUTAGE_S * SPEED


async def test_broker_restarted_without_persistence(harness: Harness) -> None:
    async def fault(agent: DeviceAgent) -> None:
        harness.broker.restart(down_for=1.0)  # sessions, retained messages and queued messages are gone
        assert agent.mqtt is not None
        async with asyncio.timeout(30):
            while agent.mqtt.connects < 2:
                await asyncio.sleep(0.1)

    await record_through(harness, fault, name="broker_restarted")


async def test_server_down(harness: Harness) -> None:
    async def fault(agent: DeviceAgent) -> None:
        await harness.restart_server(OUTAGE_S)

    counts = await record_through(harness, fault, name="server_down")
    assert counts["upload_retries"] > 0


async def test_footage_store_down(harness: Harness) -> None:
    store = harness.srv.services.store
    real_put = store.put

    async def broken_put(*args: Any, **kw: Any) -> bool:
        raise OSError("footage store unavailable (injected)")

    async def fault(agent: DeviceAgent) -> None:
        store.put = broken_put  # type: ignore[method-assign]
        await asyncio.sleep(OUTAGE_S)
        store.put = real_put  # type: ignore[method-assign]

    counts = await record_through(harness, fault, name="store_down")
    assert counts["upload_retries"] > 0


async def test_duplicated_and_out_of_order_mqtt_delivery(harness: Harness) -> None:
    async def fault(agent: DeviceAgent) -> None:
        # Whatever a broker may do: every entry so far delivered again, twice, in shuffled order.
        envelopes = [agent.buffer.read(e.seq)[1] for e in agent.buffer.entries()]
        head = agent.buffer.head_seq or 0
        async with aiomqtt.Client("127.0.0.1", harness.broker.port, identifier="replayer") as c:
            pool = envelopes * 2
            random.Random(7).shuffle(pool)
            for env in pool:
                await c.publish(device_topic(agent.device_id, DeviceTopic.ENTRY), env, qos=1)
        assert head >= 1

    await record_through(harness, fault, name="duplicated_out_of_order")


async def test_agent_killed_mid_upload_and_restarted(harness: Harness) -> None:
    agent = harness.agent()
    await agent.open()
    await agent.enroll(await harness.token())
    await agent.connect(mqtt=True)
    await agent.start_recording(reason="kill")
    await asyncio.sleep(2.0)
    await agent.crash()  # mid-recording, uploads in flight: no stop event, nothing flushed
    again = harness.agent()
    report = await again.open()
    assert report.interrupted_recording is not None
    await again.connect(mqtt=True)
    counts = await settle(harness, again)
    await again.close()
    counts["scenario"] = "agent_killed_mid_upload"
    _report(counts)


async def test_agent_offline_for_a_whole_recording(harness: Harness) -> None:
    async def fault(agent: DeviceAgent) -> None:
        await agent.disconnect()
        await agent.stop_recording(reason="offline")
        await agent.start_recording(reason="offline")  # a whole recording with no network at all
        await asyncio.sleep(OUTAGE_S)
        await agent.stop_recording(reason="offline")
        await agent.start_recording(reason="back")
        await agent.connect(mqtt=True)

    await record_through(harness, fault, name="agent_offline_whole_recording")
