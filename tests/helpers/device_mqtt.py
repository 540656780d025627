"""The MQTT side of a simulated test device: what a device publishes, and what it receives.

Independent of agent/mqtt.py on purpose (the server's tests must not depend on the agent being
right): a plain aiomqtt client on MQTT 3.1.1 with the device's retained last will, which collects
everything the server sends to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from protocol.envelope import Envelope
from protocol.messages import CheckpointRef, DeviceStatus
from protocol.topics import CHECKPOINT_TOPIC, OFFLINE, ONLINE, DeviceTopic, device_topic
from tests.helpers.device import SimDevice


async def wait_for(predicate: Callable[[], Any], limit: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` (sync) until true, or fail after ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {limit} s")
        await asyncio.sleep(0.02)


async def eventually(probe: Callable[[], Any], limit: float = 10.0, what: str = "condition") -> Any:
    """Await ``probe()`` (async) until it returns something truthy; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {limit} s (last: {value!r})")
        await asyncio.sleep(0.05)


class DeviceMqtt:
    """One simulated device's broker connection: ``async with DeviceMqtt(device, url, ...) as m``."""

    def __init__(self, device: SimDevice, url: str, username: str | None = None, password: str | None = None,
                 *, client_id: str | None = None, subscribe: bool = True, checkpoint: bool = False) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.device = device
        self.host, self.port = parts.hostname, parts.port
        self.username, self.password = username, password
        self.client_id = client_id or device.device_id
        self.subscribe = subscribe
        self.checkpoint = checkpoint
        self.received: dict[str, list[bytes]] = {"cmd": [], "receipt": [], "checkpoint": []}
        self.granted: list[int] = []
        self._client: aiomqtt.Client | None = None
        self._collector: asyncio.Task[None] | None = None

    def topic(self, kind: DeviceTopic, device_id: str | None = None) -> str:
        """A device topic (of this device unless told)."""
        return device_topic(device_id or self.device.device_id, kind)

    async def __aenter__(self) -> DeviceMqtt:
        client = aiomqtt.Client(
            self.host, self.port, identifier=self.client_id, username=self.username, password=self.password,
            protocol=aiomqtt.ProtocolVersion.V311, clean_session=True, timeout=5,
            will=aiomqtt.Will(self.topic(DeviceTopic.AVAILABILITY), OFFLINE, qos=1, retain=True))
        await client.__aenter__()
        self._client = client
        if self.subscribe:
            for t in (self.topic(DeviceTopic.CMD), self.topic(DeviceTopic.RECEIPT)):
                self.granted.append(_code(await client.subscribe(t, qos=1)))
            if self.checkpoint:
                self.granted.append(_code(await client.subscribe(CHECKPOINT_TOPIC, qos=1)))
        self._collector = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._collector
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        assert self._client is not None
        async for m in self._client.messages:
            payload = bytes(m.payload) if isinstance(m.payload, bytes | bytearray) else b""
            topic = str(m.topic)
            kind = "checkpoint" if topic == CHECKPOINT_TOPIC else topic.rsplit("/", 1)[-1]
            self.received.setdefault(kind, []).append(payload)

    @property
    def client(self) -> aiomqtt.Client:
        """The underlying client."""
        assert self._client is not None
        return self._client

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish anything anywhere (QoS 1)."""
        await self.client.publish(topic, payload, qos=1, retain=retain)

    async def entry(self, env: Envelope | bytes) -> None:
        """Publish an entry on this device's entry topic."""
        await self.publish(self.topic(DeviceTopic.ENTRY), env.raw if isinstance(env, Envelope) else env)

    async def online(self) -> None:
        """Say ``online`` (retained), as a device does on connect."""
        await self.publish(self.topic(DeviceTopic.AVAILABILITY), ONLINE, retain=True)

    async def send_status(self, env: Envelope | bytes) -> None:
        """Publish a status."""
        await self.publish(self.topic(DeviceTopic.STATUS), env.raw if isinstance(env, Envelope) else env)

    async def ack(self, env: Envelope | bytes) -> None:
        """Publish a command ack."""
        await self.publish(self.topic(DeviceTopic.ACK), env.raw if isinstance(env, Envelope) else env)


def status_of(device: SimDevice, *, time_ms: int, last_seq: int | None = None, head: str | None = None,
              state: str = "recording", checkpoint: CheckpointRef | None = None, battery_pct: int | None = 80,
              buffered_chunks: int = 0, buffered_bytes: int = 0) -> Envelope:
    """A signed DeviceStatus of ``device`` (last_seq/head default to its chain's last entry)."""
    if last_seq is None and device.seq > 0:
        last_seq, head = device.seq - 1, device.prev
    return DeviceStatus(
        v=1, device_id=device.device_id, time_ms=time_ms, last_seq=last_seq, head=head, state=state,
        recording_id=device.recording_id if state == "recording" else None, officer_id=device.officer_id,
        case_step=None, battery_pct=battery_pct, storage_free=10 << 30, buffered_chunks=buffered_chunks,
        buffered_bytes=buffered_bytes, checkpoint=checkpoint, firmware="1.2.3", config_version="cfg-7",
        alarms=()).sign(device.key)


def entry_hash(env: Envelope) -> str:
    """What the next entry's prev (and a status head) holds."""
    return hashlib.sha256(env.raw).hexdigest()


def _code(granted: Any) -> int:
    first = granted[0]
    return int(first.value) if hasattr(first, "value") else int(first)
