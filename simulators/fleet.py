"""Simulated devices and fleets: the agent's own classes, unchanged, many to one event loop.

A :class:`SimulatedDevice` is an :class:`agent.device.DeviceAgent` with either the synthetic
source (real encoding) or the replay recorder (pre-encoded chunks, still signed and verified one
by one), a fake or real clock, and its own data directory. A :class:`Fleet` runs N of them in one
process on one event loop: one MQTT connection per device (aiomqtt: no thread per connection),
one shared HTTP connection pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from agent.device import DeviceAgent
from agent.errors import AgentError
from agent.media.chunk import EncodedChunk
from agent.media.config import MediaConfig
from agent.media.recorder import ChunkSink
from custody.clock import Clock
from simulators.replay import ReplayRecorder, templates

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DeviceSpec:
    """How one simulated device is built."""

    name: str
    replay: bool = True
    media: MediaConfig = field(default_factory=lambda: MediaConfig(width=320, height=240, chunk_seconds=5,
                                                                   pre_event_seconds=0, video_bitrate=500_000))


class SimulatedDevice:
    """One simulated body camera."""

    def __init__(self, spec: DeviceSpec, root: Path, clock: Clock, *, session: aiohttp.ClientSession | None = None,
                 replay_chunks: Sequence[EncodedChunk] | None = None) -> None:
        self.spec = spec
        self.clock = clock
        chunks = replay_chunks

        def factory(sink: ChunkSink, device_id: str, officer_id: str | None) -> ReplayRecorder:
            return ReplayRecorder(chunks or templates(), clock, sink, device_id)

        self.agent = DeviceAgent(
            root / spec.name, clock, source="synthetic", media=spec.media, source_seconds=None,
            recorder_factory=factory if spec.replay else None, session=session,
        )

    @property
    def device_id(self) -> str:
        """The device id (from its key)."""
        return self.agent.device_id

    async def open(self, enroll_token: str | None = None, *, mqtt: bool = True, servers: Sequence[str] = ()) -> None:
        """Recover the buffer, enroll if needed, and connect.

        ``servers``: API URLs of the server's processes in the order the device tries them
        (default: the one from enrollment).
        """
        await self.agent.open()
        if enroll_token and not self.agent.enrolled:
            await self.agent.enroll(enroll_token)
        if self.agent.enrolled:
            await self.agent.connect(mqtt=mqtt, api_url=servers[0] if servers else None, fallback_urls=servers[1:])

    async def record(self, seconds: float, *, reason: str = "simulated") -> str:
        """Record ``seconds`` of footage (simulated or real time, as the clock goes)."""
        agent = self.agent  # a power cut replaces self.agent; this recording is the cut agent's
        recorder = agent._recorder()
        origin = recorder.media_ms  # footage counts from the recorder's start, not this recording's
        recording_id = await agent.start_recording(reason=reason)
        await recorder.wait_media_ms(origin + int(seconds * 1000))
        try:
            if agent.recording_id == recording_id:
                await agent.stop_recording(reason=reason)
        except AgentError:
            # Nothing left to stop: a full disk stops the recording by itself (with its stop
            # event); a power cut ends it with the power (the recorder's last chunk, refused by the
            # dead buffer, may wake this before the cut is complete; recovery closes the
            # recording as interrupted).
            if "storage_full" not in agent.alarms and not agent.buffer.abandoned:
                raise
        return recording_id

    async def close(self) -> None:
        """Stop everything."""
        await self.agent.close()


class Fleet:
    """N simulated devices sharing one event loop and one HTTP connection pool."""

    def __init__(self, root: Path, clock: Clock, count: int, *, replay: bool = True,
                 media: MediaConfig | None = None, replay_chunks: Sequence[EncodedChunk] | None = None,
                 http_connections: int = 256) -> None:
        self.root = root
        self.clock = clock
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=http_connections),
                                             timeout=aiohttp.ClientTimeout(total=60))
        chunks = (replay_chunks or templates()) if replay else None
        self.devices = [
            SimulatedDevice(DeviceSpec(f"dev-{i:04d}", replay, media or DeviceSpec("x").media), root, clock,
                            session=self.session, replay_chunks=chunks)
            for i in range(count)
        ]

    async def open(self, tokens: Sequence[str | None], *, mqtt: bool = True, concurrency: int = 32) -> None:
        """Open every device (enrolling with its token), a bounded number at a time."""
        sem = asyncio.Semaphore(concurrency)

        async def one(dev: SimulatedDevice, token: str | None) -> None:
            async with sem:
                await dev.open(token, mqtt=mqtt)

        await asyncio.gather(*(one(d, t) for d, t in zip(self.devices, tokens, strict=True)))

    async def close(self) -> None:
        """Close every device, then the shared pool."""
        for dev in self.devices:
            with contextlib.suppress(Exception):
                await dev.close()
        await self.session.close()
