"""custody admin broker-acl (through the API) and custody admin tls (local files)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from cryptography import x509

from custody.cli import main as custody
from custody.clock import FakeClock
from server.app import RunningServer
from server.broker_files import PasswordLine
from tests.integration.server.conftest import Api


def mode(path: Path) -> int:
    """Permission bits."""
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_broker_acl_writes_the_registry_as_mosquitto_files(server: RunningServer, admin: Api, admin_token: str,
                                                                 clock: FakeClock, tmp_path: Path) -> None:
    devices = [await admin.enroll(clock) for _ in range(2)]
    out = tmp_path / "mosquitto"
    code = await asyncio.to_thread(custody, ["admin", "--server", server.url, "--token", admin_token,
                                             "broker-acl", "--out", str(out)])
    assert code == 0
    passwd, acl = (out / "passwd"), (out / "acl")
    assert mode(passwd) == 0o600 and mode(acl) == 0o600
    users = [PasswordLine.parse(line).username for line in passwd.read_text().splitlines()]
    assert users == sorted(d.device_id for d in devices)  # the server's own line needs mqtt.password (a warning)
    assert "pattern write custody/v1/devices/%u/entry" in acl.read_text()
    assert "custody-server" in acl.read_text()
    # A lost device keeps its account (its entries are kept, marked untrusted); a revoked one loses it.
    await admin.ok("POST", f"/api/v1/devices/{devices[0].device_id}/state", {"state": "revoked"})
    assert await asyncio.to_thread(custody, ["admin", "--server", server.url, "--token", admin_token,
                                             "broker-acl", "--out", str(out)]) == 0
    users = [PasswordLine.parse(line).username for line in passwd.read_text().splitlines()]
    assert users == [devices[1].device_id]


def test_tls_init_server_device(tmp_path: Path) -> None:
    site = tmp_path / "tls"
    assert custody(["admin", "tls", "init", "--site", str(site), "--name", "某市执法局"]) == 0
    assert mode(site / "ca" / "ca.key") == 0o600
    assert custody(["admin", "tls", "init", "--site", str(site), "--name", "again"]) == 1  # never replaced
    assert custody(["admin", "tls", "server", "--site", str(site), "--name", "broker.example.org",
                    "--dns", "mosquitto", "--ip", "127.0.0.1"]) == 0
    assert custody(["admin", "tls", "device", "--site", str(site), "--device", "a" * 24]) == 0
    ca = x509.load_pem_x509_certificate((site / "ca" / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((site / "broker.example.org" / "server.crt").read_bytes())
    device = x509.load_pem_x509_certificate((site / "devices" / ("a" * 24) / "device.crt").read_bytes())
    for cert in (server, device):
        cert.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["broker.example.org", "mosquitto"]
    assert device.subject.rfc4514_string().endswith("a" * 24) or ("a" * 24) in device.subject.rfc4514_string()
    assert mode(site / "devices" / ("a" * 24) / "device.key") == 0o600
