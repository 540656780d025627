"""run.sh: the broker starts before the server has written its files, and follows every rewrite.

This is how enrollment and suspension reach the broker in the compose deployment: the server
rewrites passwd (server/broker_files.py), run.sh notices, installs the files for the broker user
and sends SIGHUP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from protocol.topics import DeviceTopic, device_topic
from tests.integration.deploy.broker_site import SERVER_USER, Client, Device, ShippedBroker, Site, make_site
from tests.services.ports import LOOPBACK, port_accepts

pytestmark = pytest.mark.integration

MakeClient = Callable[..., Client]


@pytest.fixture
def bare_site(tmp_path: Path) -> Site:
    """A site whose server has not written any broker file yet (first start)."""
    return make_site(tmp_path)


@pytest.fixture
def early_broker(bare_site: Site) -> Iterator[ShippedBroker]:
    broker = ShippedBroker(bare_site, reload_interval=0.2)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def _try(broker: ShippedBroker, site: Site, clients: MakeClient, username: str, password: str) -> str:
    client = clients(broker.ports["device"], ca_file=site.ca_file, username=username, password=password,
                     client_id=username)
    code = str(client.connect())
    if code != "Success":
        client.close()
    return code


def _eventually(broker: ShippedBroker, site: Site, clients: MakeClient, device: Device | None, expected: str) -> None:
    username, password = (device.device_id, device.password) if device else (SERVER_USER, site.server_password)
    deadline = time.monotonic() + 5
    while (code := _try(broker, site, clients, username, password)) != expected:
        assert time.monotonic() < deadline, f"{username}: still {code!r}, expected {expected!r}\n{broker.log()}"
        time.sleep(0.1)


def test_enrollment_and_suspension_reach_the_broker_through_run_sh(
    early_broker: ShippedBroker, bare_site: Site, clients: MakeClient
) -> None:
    site = bare_site
    early_broker.wait_for_log("no broker files in .* yet")
    assert _try(early_broker, site, clients, SERVER_USER, site.server_password) == "Not authorized"

    # The server starts and writes its files: it can log in a moment later.
    a = site.add_device()
    site.write_broker_files()
    _eventually(early_broker, site, clients, None, "Success")
    _eventually(early_broker, site, clients, a, "Success")

    # A device enrolled later.
    b = Device("b" * 24, "later password")
    assert _try(early_broker, site, clients, b.device_id, b.password) == "Not authorized"
    site.devices.append(b)
    site.write_broker_files()
    _eventually(early_broker, site, clients, b, "Success")

    # B is reported lost: the server rewrites passwd without it.
    connected_b = clients(early_broker.ports["device"], ca_file=site.ca_file, username=b.device_id,
                          password=b.password, client_id=b.device_id)
    assert connected_b.connect() == "Success"
    site.devices.remove(b)
    site.write_broker_files()
    _eventually(early_broker, site, clients, b, "Not authorized")
    # Mosquitto 2.0 re-checks connected clients on reload: B's live connection is dropped too,
    # so a lost device cannot keep publishing on a connection it already had.
    assert connected_b.disconnects.get(timeout=5) is not None
    assert _try(early_broker, site, clients, a.device_id, a.password) == "Success"
    assert early_broker.log().count("broker files changed: reloading") >= 3


def test_a_device_suspended_while_connected_cannot_publish_any_more(
    early_broker: ShippedBroker, bare_site: Site, clients: MakeClient
) -> None:
    site = bare_site
    a = site.add_device()
    site.write_broker_files()
    _eventually(early_broker, site, clients, None, "Success")
    server = clients(early_broker.ports["server"], ca_file=site.ca_file, username=SERVER_USER,
                     password=site.server_password, client_id="server")
    assert server.connect() == "Success"
    server.subscribe("custody/v1/#")
    device = clients(early_broker.ports["device"], ca_file=site.ca_file, username=a.device_id,
                     password=a.password, client_id=a.device_id)
    assert device.connect() == "Success"
    device.publish(device_topic(a.device_id, DeviceTopic.ENTRY), b"before")
    assert server.messages.get(timeout=5).payload == b"before"
    device.client.reconnect_delay_set(min_delay=1, max_delay=1)
    site.devices.clear()
    site.write_broker_files()
    assert device.disconnects.get(timeout=5) is not None
    # paho keeps trying to reconnect with the old password; every attempt is refused.
    assert device.connacks.get(timeout=5) == "Not authorized"
    device.client.publish(device_topic(a.device_id, DeviceTopic.ENTRY), b"after", qos=1)
    server.publish(device_topic(a.device_id, DeviceTopic.STATUS), b"control")
    got = server.collect_until(device_topic(a.device_id, DeviceTopic.STATUS), b"control")
    assert b"after" not in [payload for _, payload in got]


def test_sigterm_to_run_sh_stops_the_broker_as_docker_stop_does(early_broker: ShippedBroker) -> None:
    children = subprocess.run(["pgrep", "-P", str(early_broker.proc.pid), "-x", "mosquitto"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert len(children) == 1
    os.kill(early_broker.proc.pid, signal.SIGTERM)  # the script only, not its process group
    assert early_broker.proc.wait(timeout=5) == 0
    assert not any(port_accepts(LOOPBACK, port) for port in early_broker.ports.values())
    with pytest.raises(ProcessLookupError):
        os.kill(int(children[0]), 0)


def test_run_sh_refuses_to_start_without_the_site_tls_files(tmp_path: Path) -> None:
    site = make_site(tmp_path)
    (site.root / "tls" / "broker.key").unlink()
    broker = ShippedBroker(site)
    try:
        with pytest.raises(Exception, match="exited with code 1"):
            broker.start()
        assert "missing" in broker.log() and "broker.key" in broker.log()
    finally:
        broker.stop()
