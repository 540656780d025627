"""The agent's MQTT link against a real Mosquitto: availability, entries, commands, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aiomqtt
import pytest

from agent.mqtt import MqttLink
from custody.clock import SystemClock
from protocol.keys import SigningKey
from protocol.topics import OFFLINE, ONLINE, DeviceTopic, device_filter, device_topic
from tests.services.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


async def wait_for(predicate, limit: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + limit
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_link_announces_entries_receives_commands_and_survives_restart(mosquitto: MosquittoBroker) -> None:
    device = SigningKey.generate().public.device_id
    commands: list[bytes] = []
    receipts: list[bytes] = []

    async def on_command(b: bytes) -> None:
        commands.append(b)

    async def on_receipt(b: bytes) -> None:
        receipts.append(b)

    link = MqttLink(f"mqtt://127.0.0.1:{mosquitto.port}", device, username=None, password=None,
                    clock=SystemClock(), on_command=on_command, on_receipt=on_receipt, max_backoff=1.0)
    seen: dict[str, list[bytes]] = {}
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="server-test") as server:
        await server.subscribe(device_filter(DeviceTopic.ENTRY), qos=1)
        await server.subscribe(device_filter(DeviceTopic.AVAILABILITY), qos=1)

        async def collect() -> None:
            async for m in server.messages:
                seen.setdefault(str(m.topic), []).append(bytes(m.payload))

        collector = asyncio.create_task(collect())
        task = asyncio.create_task(link.run())
        await asyncio.wait_for(link.connected.wait(), 10)
        assert await link.publish_entry(b'{"entry":1}')
        await server.publish(device_topic(device, DeviceTopic.CMD), b"cmd-1", qos=1)
        await server.publish(device_topic(device, DeviceTopic.RECEIPT), b"receipt-1", qos=1)
        await wait_for(lambda: commands == [b"cmd-1"] and receipts == [b"receipt-1"])
        avail = device_topic(device, DeviceTopic.AVAILABILITY)
        await wait_for(lambda: seen.get(avail, [])[-1:] == [ONLINE])
        assert seen[device_topic(device, DeviceTopic.ENTRY)] == [b'{"entry":1}']
        collector.cancel()

    # The broker goes away: publishing says so (HTTP will carry entries), and the link comes back.
    mosquitto.stop()
    await wait_for(lambda: not link.connected.is_set())
    assert not await link.publish_entry(b"lost")
    mosquitto.start()
    await asyncio.wait_for(link.connected.wait(), 15)
    assert link.connects == 2
    assert await link.publish_entry(b'{"entry":2}')

    # A link that drops without saying goodbye (power loss, a crash) is announced offline by the
    # broker through the retained last will.
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="watcher") as watcher:
        await watcher.subscribe(device_topic(device, DeviceTopic.AVAILABILITY), qos=1)
        messages = aiter(watcher.messages)
        first = await asyncio.wait_for(anext(messages), 10)
        assert first.payload == ONLINE  # retained
        assert link._client is not None
        sock = link._client._client.socket()  # the paho socket under aiomqtt
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the TCP connection dies with no DISCONNECT packet
        will = await asyncio.wait_for(anext(messages), 10)
        assert will.payload == OFFLINE
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
