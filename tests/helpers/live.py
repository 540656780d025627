"""A live-view rig for tests and the benchmark: broker, server, a recording agent, and accounts.

Everything on 127.0.0.1: aioice skips loopback when gathering host candidates, so
:func:`loopback_ice` makes it offer 127.0.0.1 (PLATFORM-NOTES.md, WebRTC); no STUN is configured.
The agent runs on the system clock, because WebRTC and the browser do.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp

from agent.device import DeviceAgent
from agent.media.chunk import EncodedChunk
from agent.media.config import MediaConfig
from custody.clock import SystemClock
from server.app import RunningServer, start_server
from server.config import load_config

#: A chunk committed later than this after its last frame was captured is late.
LATE_MS = 1500


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """Make aioice gather 127.0.0.1 as its only host candidate (restored afterwards)."""
    import aioice.ice

    original = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


@dataclass
class ChunkTiming:
    """When a chunk reached the buffer, against when its last frame was captured."""

    index: int
    start_ms: int
    duration_ms: int
    committed_ms: int

    @property
    def late_ms(self) -> int:
        """Milliseconds from the end of its footage to its commit."""
        return self.committed_ms - (self.start_ms + self.duration_ms)


class TimedAgent(DeviceAgent):
    """A device agent that notes when each chunk reaches its buffer (for the no-late-chunk check)."""

    timings: list[ChunkTiming]

    async def _sink(self, chunk: EncodedChunk) -> None:
        await super()._sink(chunk)
        if not hasattr(self, "timings"):
            self.timings = []
        self.timings.append(ChunkTiming(len(self.timings), chunk.start_ms, chunk.duration_ms,
                                        int(time.time() * 1000)))


@dataclass
class LiveRig:
    """A running server and agent, and tokens for an admin and a supervisor."""

    server: RunningServer
    agent: TimedAgent
    admin: str
    supervisor: str
    http: aiohttp.ClientSession
    extra: dict[str, Any] = field(default_factory=dict)

    async def api(self, method: str, path: str, body: Any = None, *, token: str | None = None) -> tuple[int, Any]:
        """A bearer-authenticated API call; (status, JSON body)."""
        headers = {"Authorization": f"Bearer {token or self.supervisor}"}
        async with self.http.request(method, self.server.url + path, json=body, headers=headers) as r:
            data = await r.json(content_type=None) if r.content_type.endswith("json") else await r.read()
            return r.status, data

    async def server_seqs(self) -> list[int]:
        """Sequence numbers of the device's entries the server holds."""
        rows = await self.server.services.ingest.list_entries(self.agent.device_id, 0, 100_000)
        return [int(r["seq"]) for r in rows]


def media(width: int = 320, height: int = 240, fps: int = 15) -> MediaConfig:
    """Small, fast media for live tests: 1 s chunks, 1 s pre-event."""
    return MediaConfig(width=width, height=height, fps=Fraction(fps), chunk_seconds=1, pre_event_seconds=1,
                       video_bitrate=400_000)


@contextlib.asynccontextmanager
async def live_rig(root: Path, broker_url: str, media_config: MediaConfig | None = None,
                   **overrides: Any) -> AsyncIterator[LiveRig]:
    """Start a server (with ``mqtt.url`` = the broker) and an enrolled, connected agent."""
    values: dict[str, Any] = {"data_dir": str(root / "server"), "http.port": 0, "http.host": "127.0.0.1",
                              "http.access_log": False, "mqtt.url": broker_url, "live.linger_s": 1, **overrides}
    config = load_config(None, env={}, overrides=values)
    clock = SystemClock()
    with loopback_ice():
        server = await start_server(config, clock)
        http = aiohttp.ClientSession()
        agent: TimedAgent | None = None
        try:
            admin = server.services.datadir.admin_token.read_text().strip()
            async with http.post(server.url + "/api/v1/users", json={"name": "sup", "role": "supervisor"},
                                 headers={"Authorization": f"Bearer {admin}"}) as r:
                assert r.status == 201, await r.text()
                supervisor = (await r.json())["token"]["token"]
            async with http.post(server.url + "/api/v1/enrollment-tokens", json={},
                                 headers={"Authorization": f"Bearer {admin}"}) as r:
                assert r.status == 201, await r.text()
                enrollment = (await r.json())["token"]
            agent = TimedAgent(root / "device", clock, media=media_config or media())
            agent.timings = []
            await agent.open()
            await agent.enroll(enrollment)
            await agent.connect(mqtt=True)
            # Start from a device the server sees online, as a supervisor would.
            assert agent.mqtt is not None
            await asyncio.wait_for(agent.mqtt.connected.wait(), 10)
            for _ in range(200):
                if (await server.services.fleet.device(agent.device_id)).get("online"):
                    break
                await asyncio.sleep(0.05)
            yield LiveRig(server, agent, admin, supervisor, http)
        finally:
            if agent is not None:
                await agent.close()
            await http.close()
            await server.stop()
