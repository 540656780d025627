"""Mosquitto serving custody.tls certificates: clients verify it against the site CA, and with client
certificates required, only certificates from the site CA get in."""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from custody.tls import create_site_ca, issue_device_certificate, write_certificate, write_certified_key
from tests.integration.deploy.broker_site import SHIPPED_CONF, Client, ShippedBroker, Site, make_site

pytestmark = pytest.mark.integration

MakeClient = Callable[..., Client]


def _outcome(client: Client) -> str:
    """``Success``, the CONNACK's refusal, or how the TLS layer refused."""
    try:
        client.client.connect(client.host, client.port, keepalive=30)
    except ssl.SSLCertVerificationError as exc:
        return f"client refused the broker: {exc.verify_message}"
    except (ssl.SSLError, OSError) as exc:
        return f"TLS failed: {exc}"
    client.client.loop_start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            return str(client.connacks.get(timeout=0.02))
        if not client.disconnects.empty():
            # TLS 1.3: the broker judges the client certificate after the client's handshake is
            # done, so its refusal arrives as a dropped connection instead of a CONNACK.
            return "no CONNACK: connection dropped"
    return "no answer"


def test_a_client_verifies_the_broker_against_the_site_ca_and_its_name(
    shipped_broker: ShippedBroker, site: Site, clients: MakeClient, tmp_path: Path
) -> None:
    a = site.devices[0]
    port = shipped_broker.ports["device"]
    creds = {"username": a.device_id, "password": a.password, "client_id": a.device_id}
    assert _outcome(clients(port, ca_file=site.ca_file, **creds)) == "Success"
    assert _outcome(clients(port, ca_file=site.ca_file, host="localhost", **creds)) == "Success"
    other = create_site_ca("Other", now=dt.datetime.now(dt.UTC))
    other_ca = write_certificate(tmp_path / "other", "ca", other.cert_pem)
    # The broker sends its chain with the site CA in it; a client that does not trust that CA
    # stops at it (OpenSSL names it "self-signed certificate in certificate chain").
    assert _outcome(clients(port, ca_file=other_ca, **creds)) in (
        "client refused the broker: self-signed certificate in certificate chain",
        "client refused the broker: unable to get local issuer certificate",
    )
    # Plain MQTT on the TLS port gets nowhere either.
    assert _outcome(clients(port, ca_file=None, **creds)).startswith(("no CONNACK", "no answer", "TLS failed"))


def test_a_broker_certificate_without_the_dialled_name_is_refused(tmp_path: Path, clients: MakeClient) -> None:
    site = make_site(tmp_path, dns_names=("mosquitto",), ip_addresses=("127.0.0.1",))
    device = site.add_device()
    site.write_broker_files()
    broker = ShippedBroker(site)
    try:
        broker.start()
        creds = {"username": device.device_id, "password": device.password, "client_id": device.device_id}
        port = broker.ports["device"]
        assert _outcome(clients(port, ca_file=site.ca_file, **creds)) == "Success"  # 127.0.0.1 is named
        assert _outcome(clients(port, ca_file=site.ca_file, host="localhost", **creds)) == (
            "client refused the broker: Hostname mismatch, certificate is not valid for 'localhost'."
        )
    finally:
        broker.stop()


def test_with_client_certificates_required_only_the_sites_certificates_get_in(
    tmp_path: Path, clients: MakeClient
) -> None:
    site = make_site(tmp_path)
    device = site.add_device()
    site.write_broker_files()
    # The one documented switch in the shipped config, turned on; nothing else differs.
    text = SHIPPED_CONF.read_text()
    assert text.count("#require_certificate true") == 1
    broker = ShippedBroker(site, config_text=text.replace("#require_certificate true", "require_certificate true"))
    now = dt.datetime.now(dt.UTC)
    ours = write_certified_key(tmp_path / "device", "ours",
                               issue_device_certificate(site.ca, device.device_id, now=now))
    foreign_ca = create_site_ca("Foreign", now=now)
    theirs = write_certified_key(tmp_path / "device", "theirs",
                                 issue_device_certificate(foreign_ca, device.device_id, now=now))
    creds = {"username": device.device_id, "password": device.password, "client_id": device.device_id}
    try:
        broker.start()
        port = broker.ports["device"]
        good = clients(port, ca_file=site.ca_file, certfile=ours.cert, keyfile=ours.key, **creds)
        assert _outcome(good) == "Success"
        foreign = clients(port, ca_file=site.ca_file, certfile=theirs.cert, keyfile=theirs.key, **creds)
        assert _outcome(foreign).startswith(("TLS failed", "no CONNACK"))
        assert _outcome(clients(port, ca_file=site.ca_file, **creds)).startswith(("TLS failed", "no CONNACK"))
        # A good certificate does not replace the password: both are needed.
        wrong_password = dict(creds, password="not it")
        assert _outcome(clients(port, ca_file=site.ca_file, certfile=ours.cert, keyfile=ours.key,
                                **wrong_password)) == "Not authorized"
        assert "certificate verify failed" in broker.log() or "peer did not return a certificate" in broker.log()
    finally:
        broker.stop()
