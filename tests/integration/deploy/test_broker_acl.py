"""The shipped broker config with generated password and ACL files, proven with real clients over TLS.

Mosquitto drops a publish the ACL forbids without telling an MQTT 3.1.1 publisher, so every
"cannot" below is shown by a subscriber that sees the allowed messages and never the forbidden
ones: each forbidden publish is followed by an allowed control message from the same client, and
the broker delivers one client's messages in order, so when the control arrives anything sent
before it would have arrived too.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest
import yaml
from paho.mqtt.enums import MQTTProtocolVersion

from agent.mqtt import MqttLink
from custody.clock import SystemClock
from protocol.topics import CHECKPOINT_TOPIC, OFFLINE, ONLINE, DeviceTopic, device_topic, shared_filter
from server.broker_files import PasswordLine
from tests.integration.deploy.broker_site import REPO, SERVER_USER, Client, Device, ShippedBroker, Site

pytestmark = pytest.mark.integration

MakeClient = Callable[..., Client]
EVERYTHING = "custody/v1/#"


def _server(broker: ShippedBroker, site: Site, clients: MakeClient, client_id: str = "server-1",
            protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311) -> Client:
    server = clients(broker.ports["server"], ca_file=site.ca_file, username=SERVER_USER,
                     password=site.server_password, client_id=client_id, protocol=protocol)
    assert server.connect() == "Success"
    return server


def _device(broker: ShippedBroker, site: Site, clients: MakeClient, device: Device,
            client_id: str | None = None) -> Client:
    client = clients(broker.ports["device"], ca_file=site.ca_file, username=device.device_id,
                     password=device.password, client_id=client_id or device.device_id)
    assert client.connect() == "Success"
    return client


def test_a_device_publishes_on_its_own_topics_and_the_server_sees_it(
    shipped_broker: ShippedBroker, site: Site, clients: MakeClient
) -> None:
    a = site.devices[0]
    server = _server(shipped_broker, site, clients)
    server.subscribe(EVERYTHING)
    device = _device(shipped_broker, site, clients, a)
    own = [device_topic(a.device_id, kind) for kind in DeviceTopic if kind.from_device]
    for topic in own:
        device.publish(topic, b"from a")
    got = server.collect_until(own[-1], b"from a")
    assert [topic for topic, _ in got] == own


def test_a_device_cannot_publish_on_another_devices_topics_nor_the_server_topics_nor_the_checkpoint(
    shipped_broker: ShippedBroker, site: Site, clients: MakeClient
) -> None:
    a, b = site.devices
    server = _server(shipped_broker, site, clients)
    server.publish(CHECKPOINT_TOPIC, b"checkpoint from the server", retain=True)
    server.subscribe(EVERYTHING)
    assert server.collect_until(CHECKPOINT_TOPIC, b"checkpoint from the server")  # retained, delivered
    device = _device(shipped_broker, site, clients, a)
    forbidden = [
        *(device_topic(b.device_id, kind) for kind in DeviceTopic),  # all of B's topics
        device_topic(a.device_id, DeviceTopic.CMD),  # its own downlink: only the server writes commands
        device_topic(a.device_id, DeviceTopic.RECEIPT),  # ... and receipts
        "custody/v1/devices/other/entry",
        "custody/v1/anything",
    ]
    for topic in forbidden:
        device.publish(topic, b"forged")
    device.publish(CHECKPOINT_TOPIC, b"forged checkpoint", retain=True)
    control = device_topic(a.device_id, DeviceTopic.ENTRY)
    device.publish(control, b"control")
    got = server.collect_until(control, b"control")
    assert got == [(control, b"control")], f"the server received forbidden messages: {got[:-1]}"
    # The retained checkpoint a device fetches is still the server's.
    late = clients(shipped_broker.ports["server"], ca_file=site.ca_file, username=SERVER_USER,
                   password=site.server_password, client_id="server-late")
    assert late.connect() == "Success"
    late.subscribe(CHECKPOINT_TOPIC)
    assert late.messages.get(timeout=5).payload == b"checkpoint from the server"


def test_a_device_reads_its_own_commands_receipts_and_the_checkpoint_and_nothing_of_another_device(
    shipped_broker: ShippedBroker, site: Site, clients: MakeClient
) -> None:
    a, b = site.devices
    server = _server(shipped_broker, site, clients)
    server.publish(CHECKPOINT_TOPIC, b"tree head 7", retain=True)
    device = _device(shipped_broker, site, clients, a)
    for topic in (
        device_topic(b.device_id, DeviceTopic.CMD),
        device_topic(b.device_id, DeviceTopic.RECEIPT),
        device_topic(b.device_id, DeviceTopic.STATUS),
        "custody/v1/devices/+/cmd",
        EVERYTHING,
        device_topic(a.device_id, DeviceTopic.RECEIPT),
        device_topic(a.device_id, DeviceTopic.CMD),
    ):
        device.subscribe(topic)
    for kind in (DeviceTopic.CMD, DeviceTopic.RECEIPT, DeviceTopic.STATUS, DeviceTopic.ENTRY):
        server.publish(device_topic(b.device_id, kind), b"for b")
    server.publish(device_topic(a.device_id, DeviceTopic.RECEIPT), b"receipt for a")
    server.publish(device_topic(a.device_id, DeviceTopic.CMD), b"command for a")
    got = device.collect_until(device_topic(a.device_id, DeviceTopic.CMD), b"command for a")
    topics = {topic for topic, _ in got}
    assert not any(b.device_id in topic for topic in topics), f"device A read device B's messages: {got}"
    assert (CHECKPOINT_TOPIC, b"tree head 7") in got  # retained, and readable by every device
    assert (device_topic(a.device_id, DeviceTopic.RECEIPT), b"receipt for a") in got


def test_wrong_password_unknown_user_and_anonymous_are_refused_on_both_listeners(
    shipped_broker: ShippedBroker, site: Site, clients: MakeClient
) -> None:
    a = site.devices[0]
    for port in (shipped_broker.ports["device"], shipped_broker.ports["server"]):
        for username, password in (
            (a.device_id, site.devices[1].password),  # another device's password
            (a.device_id, a.password + "x"),
            (SERVER_USER, a.password),
            ("b" * 24, a.password),  # a device id nobody enrolled
            (None, None),  # anonymous
        ):
            client = clients(port, ca_file=site.ca_file, username=username, password=password, client_id="x")
            assert client.connect() == "Not authorized", (port, username)


def test_we_read_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    # The broker accepting our lines is shown above; here mosquitto_passwd's own output is read back.
    path = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "custody-server", "s3cret pass"], check=True)
    line = PasswordLine.parse(path.read_text().strip())
    assert line.username == "custody-server" and line.iterations == 101
    assert line.matches("s3cret pass") and not line.matches("s3cret")


def test_a_device_cannot_take_over_another_devices_session_by_client_id(
    shipped_broker: ShippedBroker, site: Site, clients: MakeClient
) -> None:
    a, b = site.devices
    server = _server(shipped_broker, site, clients)
    victim = _device(shipped_broker, site, clients, b)
    victim.subscribe(device_topic(b.device_id, DeviceTopic.CMD))
    # A logs in with its own credentials but B's client id: the device listener replaces the client
    # id with the user name, so B's connection and session are untouched.
    _device(shipped_broker, site, clients, a, client_id=b.device_id)
    time.sleep(0.3)  # a takeover would disconnect B right at A's CONNECT
    assert victim.disconnects.empty()
    server.publish(device_topic(b.device_id, DeviceTopic.CMD), b"still yours")
    assert victim.messages.get(timeout=5).payload == b"still yours"


def test_server_processes_share_ingest_on_the_server_listener(
    shipped_broker: ShippedBroker, site: Site, clients: MakeClient
) -> None:
    # Two server processes with one user name and their own client ids, splitting entries with an
    # MQTT 5 shared subscription, as the ingest does at scale.
    first = _server(shipped_broker, site, clients, "server-1", protocol=MQTTProtocolVersion.MQTTv5)
    second = _server(shipped_broker, site, clients, "server-2", protocol=MQTTProtocolVersion.MQTTv5)
    for server in (first, second):
        assert [rc.value for rc in server.subscribe(shared_filter(DeviceTopic.ENTRY))] == [1]  # granted QoS 1
    a = site.devices[0]
    device = _device(shipped_broker, site, clients, a)
    sent = [f"entry {i}".encode() for i in range(20)]
    for payload in sent:
        device.publish(device_topic(a.device_id, DeviceTopic.ENTRY), payload)
    received: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(received) < len(sent) and time.monotonic() < deadline:
        for server in (first, second):
            while not server.messages.empty():
                received.append(bytes(server.messages.get().payload))
        time.sleep(0.02)
    assert sorted(received) == sorted(sent)
    assert first.disconnects.empty() and second.disconnects.empty()


def test_a_devices_last_will_on_its_availability_is_delivered(
    shipped_broker: ShippedBroker, site: Site, clients: MakeClient
) -> None:
    a = site.devices[0]
    availability = device_topic(a.device_id, DeviceTopic.AVAILABILITY)
    server = _server(shipped_broker, site, clients)
    server.subscribe(availability)
    # A device process that dies without DISCONNECT: mosquitto_pub holding the line open, then SIGKILL.
    proc = subprocess.Popen(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(shipped_broker.ports["device"]), "--cafile",
         str(site.ca_file), "-u", a.device_id, "-P", a.password, "-i", a.device_id, "-q", "1",
         "--will-topic", availability, "--will-payload", OFFLINE.decode(), "--will-qos", "1", "--will-retain",
         "-t", availability, "-r", "-l"],
        stdin=subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(ONLINE + b"\n")
        proc.stdin.flush()
        assert server.messages.get(timeout=5).payload == ONLINE
        proc.kill()
        assert server.messages.get(timeout=5).payload == OFFLINE
    finally:
        proc.kill()
        proc.wait()


def test_the_health_check_listener_reads_uptime_and_touches_no_custody_topic(
    shipped_broker: ShippedBroker, site: Site, clients: MakeClient
) -> None:
    health = shipped_broker.ports["health"]
    # The compose file's health check command itself, on the test's port.
    compose = yaml.safe_load((REPO / "deploy" / "compose.yml").read_text())
    argv = [arg.replace("$$", "$") for arg in compose["services"]["mosquitto"]["healthcheck"]["test"][1:]]
    argv[argv.index("-p") + 1] = str(health)
    done = subprocess.run(argv, capture_output=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(b"seconds\n")
    a = site.devices[0]
    server = _server(shipped_broker, site, clients)
    server.publish(device_topic(a.device_id, DeviceTopic.CMD), b"secret command", retain=True)
    server.subscribe(EVERYTHING)
    anonymous = clients(health, ca_file=None, client_id="health-intruder")
    assert anonymous.connect() == "Success"
    anonymous.subscribe(EVERYTHING)
    anonymous.publish(CHECKPOINT_TOPIC, b"forged", retain=True)
    anonymous.publish(device_topic(a.device_id, DeviceTopic.ENTRY), b"forged")
    # Positive control through the server's own connection: it arrives, the forgeries never did.
    server.publish(device_topic(a.device_id, DeviceTopic.STATUS), b"control")
    got = server.collect_until(device_topic(a.device_id, DeviceTopic.STATUS), b"control")
    assert b"forged" not in [payload for _, payload in got]
    assert anonymous.messages.empty()  # not even the retained command


async def test_the_agents_own_mqtt_link_works_against_the_shipped_broker_over_tls(
    shipped_broker: ShippedBroker, site: Site
) -> None:
    a = site.devices[0]
    commands: list[bytes] = []
    receipts: list[bytes] = []
    checkpoints: list[bytes] = []

    async def on_command(payload: bytes) -> None:
        commands.append(payload)

    async def on_receipt(payload: bytes) -> None:
        receipts.append(payload)

    async def on_checkpoint(payload: bytes) -> None:
        checkpoints.append(payload)

    tls = ssl.create_default_context(cafile=str(site.ca_file))
    link = MqttLink(f"mqtts://127.0.0.1:{shipped_broker.ports['device']}", a.device_id, username=a.device_id,
                    password=a.password, clock=SystemClock(), on_command=on_command, on_receipt=on_receipt,
                    on_checkpoint=on_checkpoint, tls_context=tls, max_backoff=1.0)
    server_tls = ssl.create_default_context(cafile=str(site.ca_file))
    async with aiomqtt.Client("127.0.0.1", shipped_broker.ports["server"], identifier="server-test",
                              username=SERVER_USER, password=site.server_password, tls_context=server_tls) as server:
        await server.subscribe(EVERYTHING, qos=1)
        await server.publish(CHECKPOINT_TOPIC, b"tree head 9", qos=1, retain=True)
        task = asyncio.create_task(link.run())
        try:
            await asyncio.wait_for(link.connected.wait(), 10)
            assert await link.publish_entry(b"entry 0")
            await server.publish(device_topic(a.device_id, DeviceTopic.CMD), b"start", qos=1)
            await server.publish(device_topic(a.device_id, DeviceTopic.RECEIPT), b"receipt 0", qos=1)
            seen: list[tuple[str, bytes]] = []

            async def collect() -> None:
                async for message in server.messages:
                    assert isinstance(message.payload, bytes)
                    seen.append((str(message.topic), message.payload))
                    if (str(message.topic), message.payload) == (device_topic(a.device_id, DeviceTopic.ENTRY),
                                                                 b"entry 0"):
                        return

            await asyncio.wait_for(collect(), 10)
            assert (device_topic(a.device_id, DeviceTopic.AVAILABILITY), ONLINE) in seen
            for _ in range(200):
                if commands and receipts and checkpoints:
                    break
                await asyncio.sleep(0.05)
            assert (commands, receipts, checkpoints) == ([b"start"], [b"receipt 0"], [b"tree head 9"])
        finally:
            await link.stop()
            task.cancel()
