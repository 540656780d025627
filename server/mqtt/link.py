"""The server's own broker connection: subscribe, reconnect, dispatch in order per device, publish.

Built on aiomqtt (paho-mqtt underneath, on the event loop). The session is clean: nothing the
server needs lives only in the broker, because every entry also comes over HTTP, statuses repeat,
and unacknowledged commands are re-sent from the database on every (re)connect. So after a broker
restart without persistence the server simply connects again and subscribes again.

Protocol: MQTT 5 where the broker has it (Mosquitto, EMQX), so the ingest topics (entry, status,
ack) can be shared subscriptions (``$share/custody-ingest/...``): each message goes to one server
process of the group. Availability is always a plain subscription, because the retained
``online``/``offline`` messages are not sent to shared subscriptions (MQTT 5, 4.8.2) and every
process wants the whole picture anyway. On MQTT 3.1.1 (the embedded amqtt broker) every
subscription is plain.

Messages are handed to a few worker tasks, partitioned by device id, so one device's messages are
handled in the order they arrived while different devices proceed in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.reasoncodes import ReasonCode

from custody import mqtt_speedups
from custody.tasks import cancel_and_wait, discard
from protocol.topics import DeviceTopic, device_filter, shared_filter

log = logging.getLogger(__name__)

mqtt_speedups.install()  # paho's MQTT 5 property objects, built once instead of per packet

#: ``(topic, payload, retained)``: handle one received message (exceptions are the handler's to count).
MessageHandler = Callable[[str, bytes, bool], Awaitable[None]]
#: Run after every successful (re)connect and subscribe.
ConnectHook = Callable[[], Awaitable[None]]

#: Topics the server subscribes to; the ingest ones may be shared on MQTT 5.
INGEST_KINDS = (DeviceTopic.ENTRY, DeviceTopic.STATUS, DeviceTopic.ACK)
PLAIN_KINDS = (DeviceTopic.AVAILABILITY,)

#: How many receipts may wait for the broker before the oldest are dropped (they are also in the
#: HTTP answer and in GET /api/v1/device/entries/{seq}: dropping one delays nothing that matters).
OUTBOX_LIMIT = 10_000
#: How long a connect attempt may take (amqtt never answers a v5 CONNECT: it just waits).
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """Where and as whom the server connects."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @classmethod
    def from_url(cls, url: str, username: str | None, password: str | None) -> BrokerEndpoint:
        """From ``mqtt://host:port`` or ``mqtts://host:port``."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"broker URL {url!r} must look like mqtt://host:port or mqtts://host:port")
        tls = parts.scheme == "mqtts"
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls, username, password)


@dataclass(slots=True)
class LinkStats:
    """Counters of the link, for the fleet view."""

    connects: int = 0
    connect_failures: int = 0
    received: int = 0
    published: int = 0
    publish_failures: int = 0
    outbox_dropped: int = 0
    protocol: str | None = None
    shared: bool = False
    subscriptions: list[str] = field(default_factory=list)


class ServerLink:
    """One server process's connection to the broker, kept up until :meth:`stop`."""

    def __init__(
        self,
        endpoint: BrokerEndpoint,
        *,
        client_id: str,
        handler: MessageHandler,
        protocol: str = "auto",
        shared_subscriptions: bool = True,
        workers: int = 4,
        keepalive: int = 30,
        tls_context: ssl.SSLContext | None = None,
        max_backoff: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.client_id = client_id
        self.handler = handler
        self.protocol = protocol
        self.shared_subscriptions = shared_subscriptions
        self.keepalive = keepalive
        self.tls_context = tls_context or (ssl.create_default_context() if endpoint.tls else None)
        self.max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.stats = LinkStats()
        self.on_connect: list[ConnectHook] = []
        self._client: aiomqtt.Client | None = None
        self._stopping = False
        self._v5: bool | None = {"5": True, "3.1.1": False}.get(protocol)
        self._queues: list[asyncio.Queue[tuple[str, bytes, bool]]] = [asyncio.Queue(1000) for _ in range(workers)]
        self._workers: list[asyncio.Task[None]] = []
        self._outbox: deque[tuple[str, bytes, int, bool]] = deque()
        self._outbox_ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting (in the background) and the workers."""
        self._workers = [asyncio.create_task(self._work(q), name=f"mqtt-worker-{i}")
                         for i, q in enumerate(self._queues)]
        self._task = asyncio.create_task(self.run(), name="mqtt-link")

    async def stop(self) -> None:
        """Disconnect and stop the workers (queued messages are dropped: HTTP and re-sends cover them).

        The connection is closed from inside (a DISCONNECT, then the session ends by itself) rather
        than by cancelling the task: a cancellation arriving just as one of aiomqtt's waits ends is
        lost on Python 3.11 (see custody.tasks), which left shutdown waiting forever.
        """
        self._stopping = True
        self._stop.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=10)
            if not done:
                log.warning("MQTT link did not stop within 10 s; cancelling it")
        await cancel_and_wait(t for t in (self._task, *self._workers) if t is not None)
        self.connected.clear()

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until :meth:`stop`."""
        attempt = 0
        while not self._stopping:
            try:
                await self._session()
                attempt = 0
            except (TimeoutError, aiomqtt.MqttError, OSError) as exc:
                self.stats.connect_failures += 1
                attempt += 1
                log.warning("MQTT link to %s:%d down (%s); retrying", self.endpoint.host, self.endpoint.port, exc)
            finally:
                self.connected.clear()
                self._client = None
            if self._stopping:
                break
            # Transport retry timing is real time, not the service clock: a fake clock in tests must
            # not stall reconnection.
            delay = min(self.max_backoff, 0.25 * 2 ** min(attempt, 8)) * random.uniform(0.5, 1.0) if attempt else 0.1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    def _client_for(self, v5: bool) -> aiomqtt.Client:
        e = self.endpoint
        kwargs: dict[str, Any] = {"clean_start": True} if v5 else {"clean_session": True}
        return aiomqtt.Client(
            e.host, e.port, identifier=self.client_id, username=e.username, password=e.password,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            keepalive=self.keepalive, tls_context=self.tls_context, timeout=CONNECT_TIMEOUT_S, **kwargs)

    async def _connect(self, stack: contextlib.AsyncExitStack) -> tuple[aiomqtt.Client, bool]:
        if self._v5 is not None:
            return await stack.enter_async_context(self._client_for(self._v5)), self._v5
        try:
            client = await stack.enter_async_context(self._client_for(True))
            self._v5 = True
            return client, True
        except MqttConnectError as exc:
            rc = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
            if rc not in (1, 132):  # 3.1.1 "unacceptable protocol version", 5 "unsupported protocol version"
                raise
        except aiomqtt.MqttError:  # amqtt does not answer a v5 CONNECT at all: the attempt times out
            pass
        log.info("broker %s:%d does not speak MQTT 5; using 3.1.1", self.endpoint.host, self.endpoint.port)
        client = await stack.enter_async_context(self._client_for(False))
        self._v5 = False
        return client, False

    async def _session(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            client, v5 = await self._connect(stack)
            self._client = client
            shared = v5 and self.shared_subscriptions
            filters = [shared_filter(k) if shared else device_filter(k) for k in INGEST_KINDS]
            filters += [device_filter(k) for k in PLAIN_KINDS]
            for topic_filter in filters:
                granted = await client.subscribe(topic_filter, qos=1, timeout=10)
                code = granted[0]
                value = code.value if hasattr(code, "value") else int(code)
                if value >= 0x80:
                    # Not fatal: a broker ACL that forbids one filter must not stop the rest of ingest.
                    log.error("broker refused the subscription %s (code %s)", topic_filter, value)
            self.stats.connects += 1
            self.stats.protocol = "5" if v5 else "3.1.1"
            self.stats.shared = shared
            self.stats.subscriptions = filters
            self.connected.set()
            log.info("MQTT link up (%s:%d, MQTT %s%s)", self.endpoint.host, self.endpoint.port,
                     self.stats.protocol, ", shared subscriptions" if shared else "")
            sender = asyncio.create_task(self._send(client), name="mqtt-sender")
            hooks = asyncio.create_task(self._run_hooks(), name="mqtt-on-connect")
            stop = asyncio.create_task(self._stop.wait(), name="mqtt-stop")
            receive: asyncio.Task[aiomqtt.Message] | None = None
            try:
                messages = client.messages
                while True:
                    receive = asyncio.create_task(messages.__anext__(), name="mqtt-receive")
                    await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
                    if not receive.done():  # stopping: leave the `async with`, which disconnects cleanly
                        receive.cancel()
                        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                            await receive
                        return
                    message = receive.result()  # raises MqttError when the connection is lost
                    self.stats.received += 1
                    payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
                    topic = str(message.topic)
                    await self._queues[self._partition(topic)].put((topic, payload, bool(message.retain)))
            finally:
                stop.cancel()
                if receive is not None:  # cancelled mid-wait: its end (the connection closed) is expected
                    discard(receive)
                await cancel_and_wait((sender, hooks))

    async def _run_hooks(self) -> None:
        for hook in self.on_connect:
            try:
                await hook()
            except Exception:  # one hook failing must not take the link down
                log.exception("MQTT on-connect hook failed")

    def _partition(self, topic: str) -> int:
        parts = topic.split("/")
        key = parts[3] if len(parts) > 3 else topic  # custody/v1/devices/{id}/kind
        return zlib.crc32(key.encode()) % len(self._queues)

    async def _work(self, queue: asyncio.Queue[tuple[str, bytes, bool]]) -> None:
        while True:
            topic, payload, retained = await queue.get()
            try:
                await self.handler(topic, payload, retained)
            except Exception:  # the handler counts refusals; anything else is logged and survived
                log.exception("MQTT message on %s could not be handled", topic)
            finally:
                queue.task_done()

    # -- publishing ------------------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Publish now and wait for the broker's acknowledgement; False when not connected or it failed."""
        client = self._client
        if client is None or not self.connected.is_set():
            return False
        try:
            await client.publish(topic, payload, qos=qos, retain=retain, timeout=10)
        except aiomqtt.MqttError as exc:
            self.stats.publish_failures += 1
            log.info("MQTT publish on %s failed: %s", topic, exc)
            return False
        self.stats.published += 1
        return True

    def publish_later(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue a message for the broker without waiting (kept while disconnected, up to a bound)."""
        if len(self._outbox) >= OUTBOX_LIMIT:
            self._outbox.popleft()
            self.stats.outbox_dropped += 1
        self._outbox.append((topic, payload, qos, retain))
        self._outbox_ready.set()

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            if not self._outbox:
                self._outbox_ready.clear()
                await self._outbox_ready.wait()
                continue
            topic, payload, qos, retain = self._outbox[0]
            try:
                await client.publish(topic, payload, qos=qos, retain=retain, timeout=10)
            except aiomqtt.MqttError as exc:
                # Keep the message: if the connection is going down, the next one sends it.
                self.stats.publish_failures += 1
                log.info("queued MQTT publish on %s failed: %s", topic, exc)
                await asyncio.sleep(0.5)
                continue
            self._outbox.popleft()
            self.stats.published += 1

    @property
    def outbox_size(self) -> int:
        """Messages waiting for the broker."""
        return len(self._outbox)
