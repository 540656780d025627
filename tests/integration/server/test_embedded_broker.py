"""The embedded broker (amqtt in the server process, MQTT 3.1.1): per-device credentials and topic ACL.

A bare server starts it; a device connects with the credentials of its enrollment answer; a wrong
password, an unknown user, a borrowed client id and a revoked device are refused; a device can
neither publish on nor subscribe to another device's topics; entries and receipts flow; devices
read the checkpoint topic. The stored password hashes also work in a real Mosquitto password file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from custody.clock import FakeClock
from protocol.topics import CHECKPOINT_TOPIC, DeviceTopic, device_topic
from server.app import RunningServer
from server.services.broker_accounts import BrokerAccounts
from tests.helpers.device import SimDevice
from tests.helpers.device_mqtt import DeviceMqtt, wait_for
from tests.integration.server.conftest import Api
from tests.services.mosquitto import MosquittoFactory

pytestmark = pytest.mark.integration


def creds(device: SimDevice) -> tuple[str, str, str]:
    """(url, user, password) from the device's enrollment answer."""
    a = device.answer
    assert a is not None and a.mqtt_url and a.mqtt_username and a.mqtt_password
    return a.mqtt_url, a.mqtt_username, a.mqtt_password


async def refused(url: str, user: str | None, password: str | None, client_id: str) -> bool:
    host, port = url.removeprefix("mqtt://").split(":")
    try:
        async with aiomqtt.Client(host, int(port), identifier=client_id, username=user, password=password,
                                  timeout=5):
            return False
    except aiomqtt.MqttError:
        return True


async def entries_of(api: Api, device_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await api.ok("GET", f"/api/v1/devices/{device_id}/entries"))["entries"]
    return found


async def test_embedded_broker_authenticates_devices_and_enforces_the_acl(server: RunningServer, admin: Api,
                                                                           clock: FakeClock) -> None:
    plane = server.mqtt
    assert plane.broker is not None and plane.link is not None
    await wait_for(lambda: plane.link is not None and plane.link.connected.is_set(), what="link up")
    assert plane.link.stats.protocol == "3.1.1" and not plane.link.stats.shared
    a, b = await admin.enroll(clock), await admin.enroll(clock)
    url, user, password = creds(a)
    assert url == plane.broker.url and user == a.device_id and len(password) >= 32
    assert creds(b)[2] != password

    # Who may connect.
    assert await refused(url, user, password + "x", a.device_id)
    assert await refused(url, user, creds(b)[2], a.device_id)  # another device's password
    assert await refused(url, "nobody", "pw", "nobody")
    assert await refused(url, None, None, "anonymous")
    assert await refused(url, user, password, b.device_id)  # its credentials under another device's client id
    assert await refused(url, plane.config.username, "guess", "x")  # the server's user, guessed

    async with DeviceMqtt(a, url, user, password, checkpoint=True) as ma, \
            DeviceMqtt(b, *creds(b)[:1], creds(b)[1], creds(b)[2]) as mb:
        assert ma.granted == [1, 1, 1]  # its own cmd, its own receipt, the checkpoint
        # Subscribing to another device's topics, or with wildcards, is refused.
        for topic in (device_topic(b.device_id, DeviceTopic.RECEIPT), device_topic(b.device_id, DeviceTopic.CMD),
                      "custody/v1/devices/+/receipt", "custody/v1/#", device_topic(b.device_id, DeviceTopic.ENTRY)):
            granted = await ma.client.subscribe(topic, qos=1)
            code = granted[0]
            assert (code.value if hasattr(code, "value") else int(code)) == 0x80, topic

        # A publishes on B's entry topic, and on B's receipt and command topics: none of it gets through.
        await ma.publish(device_topic(b.device_id, DeviceTopic.ENTRY), b.event("start", advance=False).raw)
        await ma.publish(device_topic(b.device_id, DeviceTopic.RECEIPT), b"fake receipt")
        await ma.publish(device_topic(b.device_id, DeviceTopic.CMD), b"fake command")
        await ma.publish(CHECKPOINT_TOPIC, b"fake checkpoint")
        # Its own entry goes through, and its receipt comes back to it alone.
        await ma.entry(a.event("start"))
        await wait_for(lambda: len(ma.received["receipt"]) == 1, what="A's receipt")
        await asyncio.sleep(0.3)
        assert mb.received["receipt"] == [] and mb.received["cmd"] == []
        assert await entries_of(admin, b.device_id) == []
        assert [e["source"] for e in await entries_of(admin, a.device_id)] == ["mqtt"]
        assert plane.stats()["refused_total"] == 0  # the broker stopped them; the server never saw them

        # Devices read the checkpoint the server publishes (retained).
        assert await plane.publish_checkpoint(b"custody.example/log\n12\nq83vEjRWeJ6rze/vEjRWeA==\n")
        await wait_for(lambda: len(ma.received["checkpoint"]) >= 1, what="checkpoint")
        assert ma.received["checkpoint"][0].startswith(b"custody.example/log")

        # Commands reach the device over the embedded broker too.
        sent = await admin.ok("POST", f"/api/v1/devices/{a.device_id}/commands", {"kind": "ping"}, status=201)
        await wait_for(lambda: len(ma.received["cmd"]) == 1, what="command")
        assert ma.received["cmd"][0] == sent["envelope"].encode("ascii")

    # A revoked device is shut out; a lost one still delivers (its entries are marked untrusted).
    await admin.ok("POST", f"/api/v1/devices/{b.device_id}/state", {"state": "revoked"})
    assert await refused(*creds(b)[:1], creds(b)[1], creds(b)[2], b.device_id)
    await admin.ok("POST", f"/api/v1/devices/{a.device_id}/state", {"state": "lost"})
    assert not await refused(url, user, password, a.device_id)


async def test_enrollment_retry_issues_a_new_password(server: RunningServer, admin: Api, clock: FakeClock) -> None:
    token = (await admin.ok("POST", "/api/v1/enrollment-tokens", {}))["token"]
    device = SimDevice(server.url, admin.session, clock)
    first = await device.enroll(token)
    second = await device.enroll(token)  # the answer was lost; the same device retries the same token
    assert first.mqtt_password != second.mqtt_password
    assert second.mqtt_url is not None and second.mqtt_password is not None
    assert await refused(second.mqtt_url, device.device_id, first.mqtt_password, device.device_id)
    assert not await refused(second.mqtt_url, device.device_id, second.mqtt_password, device.device_id)


async def test_stored_hashes_work_in_a_mosquitto_password_file(server: RunningServer, admin: Api, clock: FakeClock,
                                                               mosquitto_factory: MosquittoFactory,
                                                               tmp_path: Path) -> None:
    device = await admin.enroll(clock)
    lines = await BrokerAccounts(server.services.db).password_lines()
    assert len(lines) == 1 and lines[0].startswith(f"{device.device_id}:$7$101$")
    passwd = tmp_path / "passwd"
    passwd.write_text("\n".join(lines) + "\n")
    passwd.chmod(0o600)
    broker = mosquitto_factory(f"password_file {passwd}", allow_anonymous=False)
    _, user, password = creds(device)
    assert not await refused(broker.url, user, password, user)
    assert await refused(broker.url, user, password + "x", user)


async def test_mqtt_off_means_http_only(tmp_path: Path, clock: FakeClock) -> None:
    from server.app import start_server
    from tests.integration.server.conftest import server_config

    overrides: dict[str, Any] = {"mqtt.url": "off"}
    srv = await start_server(server_config(tmp_path / "data", **overrides), clock)
    try:
        assert srv.mqtt.broker is None and srv.mqtt.link is None
        assert srv.services.devices.mqtt_url is None
        fleet = await srv.services.fleet.fleet()
        assert fleet["mqtt"] == {"enabled": False}
    finally:
        await srv.stop()
