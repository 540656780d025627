"""The device's MQTT link: availability, entries, status and acks up; commands, receipts and checkpoints down.

Built on aiomqtt (paho-mqtt underneath, driven by the event loop: no thread per connection, so
a simulated fleet runs hundreds of devices in one process). MQTT 3.1.1 throughout, because the
embedded broker speaks nothing newer; topics come only from :mod:`protocol.topics`.

MQTT is not a hard dependency of ingest: when the link is down, publishing returns False and
the uploader still delivers every entry over HTTP. The link reconnects by itself with
exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiomqtt

from agent.errors import AgentError
from custody import mqtt_speedups
from custody.clock import Clock
from custody.tasks import discard
from protocol.topics import CHECKPOINT_TOPIC, OFFLINE, ONLINE, DeviceTopic, device_topic

log = logging.getLogger(__name__)

mqtt_speedups.install()  # paho's MQTT 5 property objects, built once instead of per packet

Handler = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is, from the enrollment answer's URL (``mqtt://host:port`` or ``mqtts://``)."""

    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Parse a broker URL; :class:`AgentError` if it is not one."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise AgentError(f"broker URL {url!r} must look like mqtt://host:port or mqtts://host:port")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls)


class MqttLink:
    """One device's connection to the broker, kept up until :meth:`stop`."""

    def __init__(
        self,
        url: str,
        device_id: str,
        *,
        username: str | None,
        password: str | None,
        clock: Clock,
        on_command: Handler,
        on_receipt: Handler,
        on_checkpoint: Handler | None = None,
        tls_context: ssl.SSLContext | None = None,
        keepalive: int = 30,
        max_backoff: float = 30.0,
    ) -> None:
        self.address = BrokerAddress.parse(url)
        self.device_id = device_id
        self.username = username
        self.password = password
        self.clock = clock
        self.on_command = on_command
        self.on_receipt = on_receipt
        self.on_checkpoint = on_checkpoint
        self.tls_context = tls_context or (ssl.create_default_context() if self.address.tls else None)
        self.keepalive = keepalive
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._stopping = False
        self._stop = asyncio.Event()
        self.connects = 0

    def _topic(self, kind: DeviceTopic) -> str:
        return device_topic(self.device_id, kind)

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until :meth:`stop`."""
        attempt = 0
        while not self._stopping:
            try:
                await self._session()
                attempt = 0
            except aiomqtt.MqttError as exc:
                if self._stopping:
                    break
                attempt += 1
                delay = min(self.max_backoff, 0.5 * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0)
                log.info("MQTT link to %s:%d down (%s); retrying in %.1f s",
                         self.address.host, self.address.port, exc, delay)
            finally:
                self.connected.clear()
                self._client = None
            if not self._stopping:
                await self.clock.sleep(delay if attempt else 0.1)

    async def _session(self) -> None:
        will = aiomqtt.Will(self._topic(DeviceTopic.AVAILABILITY), OFFLINE, qos=1, retain=True)
        async with aiomqtt.Client(
            self.address.host,
            self.address.port,
            identifier=self.device_id,
            username=self.username,
            password=self.password,
            will=will,
            protocol=aiomqtt.ProtocolVersion.V311,
            # A persistent session lets a broker with persistence queue commands while the
            # device is away; without one, commands are re-sent and receipts come over HTTP.
            clean_session=False,
            keepalive=self.keepalive,
            tls_context=self.tls_context,
            timeout=10,
        ) as client:
            self._client = client
            await client.subscribe(self._topic(DeviceTopic.CMD), qos=1)
            await client.subscribe(self._topic(DeviceTopic.RECEIPT), qos=1)
            if self.on_checkpoint is not None:
                await client.subscribe(CHECKPOINT_TOPIC, qos=1)
            await client.publish(self._topic(DeviceTopic.AVAILABILITY), ONLINE, qos=1, retain=True)
            self.connects += 1
            self.connected.set()
            log.info("MQTT link up (%s:%d)", self.address.host, self.address.port)
            # Stopping ends the wait from inside (the `async with` then disconnects cleanly): a task
            # cancellation arriving just as one of aiomqtt's waits ends is lost on 3.11 (custody.tasks).
            stop = asyncio.ensure_future(self._stop.wait())
            receive: asyncio.Future[aiomqtt.Message] | None = None
            try:
                messages = client.messages
                while True:
                    receive = asyncio.ensure_future(messages.__anext__())
                    await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
                    if not receive.done():
                        receive.cancel()
                        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                            await receive
                        return
                    message = receive.result()  # MqttError when the connection is lost
                    await self._dispatch(str(message.topic), bytes(message.payload)
                                         if isinstance(message.payload, bytes | bytearray) else b"")
            finally:
                stop.cancel()
                if receive is not None:  # cancelled mid-wait (a power cut): its end is expected
                    discard(receive)

    async def _dispatch(self, topic: str, payload: bytes) -> None:
        try:
            if topic == self._topic(DeviceTopic.CMD):
                await self.on_command(payload)
            elif topic == self._topic(DeviceTopic.RECEIPT):
                await self.on_receipt(payload)
            elif topic == CHECKPOINT_TOPIC and self.on_checkpoint is not None:
                await self.on_checkpoint(payload)
            elif topic.endswith("/availability"):
                pass  # some brokers echo retained availability back; nothing to do with it here
            else:
                log.warning("MQTT message on unexpected topic %s ignored", topic)
        except Exception:  # one bad message must not take the link down
            log.exception("handling MQTT message on %s failed", topic)

    async def _publish(self, kind: DeviceTopic, payload: bytes, *, qos: int = 1) -> bool:
        client = self._client
        if client is None or not self.connected.is_set():
            return False
        try:
            await client.publish(self._topic(kind), payload, qos=qos, timeout=10)
        except aiomqtt.MqttError as exc:
            log.info("MQTT publish on %s failed: %s", kind.value, exc)
            return False
        return True

    async def publish_entry(self, envelope: bytes) -> bool:
        """Announce a committed entry (QoS 1); False when the link is down (HTTP will carry it)."""
        return await self._publish(DeviceTopic.ENTRY, envelope)

    async def publish_status(self, envelope: bytes) -> bool:
        """Publish a signed DeviceStatus."""
        return await self._publish(DeviceTopic.STATUS, envelope)

    async def publish_ack(self, envelope: bytes) -> bool:
        """Publish a signed CommandAck."""
        return await self._publish(DeviceTopic.ACK, envelope)

    async def stop(self) -> None:
        """Say ``offline`` (retained) and disconnect; :meth:`run` then returns by itself."""
        self._stopping = True
        client = self._client
        if client is not None and self.connected.is_set():
            with contextlib.suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                await client.publish(self._topic(DeviceTopic.AVAILABILITY), OFFLINE, qos=1, retain=True, timeout=5)
        self._stop.set()
        self.connected.clear()
