"""mqtt.broker_files_dir: the server keeps an external Mosquitto's password file and ACL up to date."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import aiohttp

from custody.clock import FakeClock
from server.app import start_server
from server.mqtt.credentials import check_password
from tests.integration.server.conftest import Api, server_config


async def test_files_are_written_at_start_and_again_when_a_device_enrolls_or_is_revoked(
        tmp_path: Path, clock: FakeClock) -> None:
    out = tmp_path / "broker"
    overrides: dict[str, Any] = {"mqtt.broker_files_dir": str(out), "mqtt.password": "server-secret-1234"}
    srv = await start_server(server_config(tmp_path / "data", **overrides), clock)
    try:
        passwd, acl = out / "passwd", out / "acl"
        # At start: the server's own user, no device yet, both files private to the server's user.
        lines = passwd.read_text().splitlines()
        assert [line.split(":", 1)[0] for line in lines if not line.startswith("#")] == ["custody-server"]
        assert check_password("custody-server", lines[-1].split(":", 1)[1], "server-secret-1234")
        assert "custody-server" in acl.read_text()
        assert stat.S_IMODE(passwd.stat().st_mode) == stat.S_IMODE(acl.stat().st_mode) == 0o600
        assert await srv.services.broker_files.write_if_changed() is False  # nothing changed: not rewritten

        async with aiohttp.ClientSession() as session:
            admin = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
            device = await admin.enroll(clock)
            assert await srv.services.broker_files.write_if_changed() is True
            users = [line.split(":", 1)[0] for line in passwd.read_text().splitlines() if not line.startswith("#")]
            assert sorted(users) == sorted(["custody-server", device.device_id])

            await admin.ok("POST", f"/api/v1/devices/{device.device_id}/state",
                           {"state": "revoked", "reason": "test: a revoked device leaves the broker"})
            assert await srv.services.broker_files.write_if_changed() is True
            users = [line.split(":", 1)[0] for line in passwd.read_text().splitlines() if not line.startswith("#")]
            assert users == ["custody-server"]
    finally:
        await srv.stop()
