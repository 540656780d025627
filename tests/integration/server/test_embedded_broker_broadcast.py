"""The embedded broker delivers every message while other clients subscribe and unsubscribe.

amqtt 0.12 iterates its subscription table while awaiting the topic ACL of each subscriber, so a
subscription made meanwhile ("dictionary changed size during iteration") lost the message for
every subscriber after that point in the table: receipts and commands to devices, in the demo's
start-up when three devices enroll and subscribe together.
"""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from server.mqtt.embedded import EmbeddedBroker

pytestmark = pytest.mark.integration

MESSAGES = 60


async def _refuse_devices(_user: str, _password: str | None) -> bool:
    return False


async def _collect(client: aiomqtt.Client, into: list[bytes], want: int) -> None:
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        into.append(message.payload)
        if len(into) == want:
            return


async def test_no_message_is_lost_while_others_subscribe() -> None:
    broker = EmbeddedBroker("127.0.0.1", 0, "custody-server", _refuse_devices)
    await broker.start()
    try:
        port = broker.port
        assert port is not None

        def client(name: str) -> aiomqtt.Client:
            return aiomqtt.Client("127.0.0.1", port, identifier=name, username="custody-server",
                                  password=broker.server_password, timeout=10)

        topic = "custody/v1/devices/dev1/receipt"
        async with client("wide") as wide, client("narrow") as narrow, client("sender") as sender, \
                client("churn") as churn:
            # Two filters match: the wide one earlier in the broker's table, the narrow one later.
            await wide.subscribe("custody/v1/devices/+/receipt", qos=1)
            await narrow.subscribe(topic, qos=1)
            got_wide: list[bytes] = []
            got_narrow: list[bytes] = []
            readers = [asyncio.create_task(_collect(wide, got_wide, MESSAGES)),
                       asyncio.create_task(_collect(narrow, got_narrow, MESSAGES))]

            async def subscribe_meanwhile() -> None:
                for i in range(MESSAGES * 2):
                    await churn.subscribe(f"custody/v1/devices/churn{i}/cmd", qos=1)
                    if i % 3 == 0:
                        await churn.unsubscribe(f"custody/v1/devices/churn{i}/cmd")

            async def send() -> None:
                for i in range(MESSAGES):
                    await sender.publish(topic, f"m{i}".encode(), qos=1)

            await asyncio.gather(subscribe_meanwhile(), send())
            await asyncio.wait(readers, timeout=10)  # both have all, or the assertions say what is missing
            for task in readers:
                task.cancel()
            expected = [f"m{i}".encode() for i in range(MESSAGES)]
            assert sorted(got_wide) == sorted(expected)
            assert sorted(got_narrow) == sorted(expected)
    finally:
        await broker.stop()
