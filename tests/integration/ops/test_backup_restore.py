"""Backup and restore: database, keys and secrets come back on a fresh data dir; footage stays in its store."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from custody.cli import main as custody
from custody.clock import FakeClock
from server.app import start_server
from server.backup import BackupError, backup, read_manifest, restore
from tests.integration.ops.conftest import deliver
from tests.integration.server.conftest import Api, server_config


def shared_store(footage: Path) -> dict[str, Any]:
    """Overrides putting the local footage store outside the data dir."""
    return {"storage.local_path": str(footage)}


async def test_backup_restore_onto_a_fresh_data_dir(tmp_path: Path, clock: FakeClock,
                                                     session: aiohttp.ClientSession) -> None:
    footage = tmp_path / "footage"  # footage lives in its store, shared by the old and the restored server
    old_cfg = server_config(tmp_path / "old", **shared_store(footage))
    srv = await start_server(old_cfg, clock)
    try:
        admin = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
        device = await admin.enroll(clock)
        await device.announce(device.event("start"))
        before = await deliver(device)
        key_id = srv.services.keyring.current.key_id
        # (1) backed up while the server runs (the sqlite3 backup API copies a consistent snapshot)
        assert custody(["admin", "--data-dir", str(tmp_path / "old"), "backup", str(tmp_path / "bk")]) == 0
        after = await deliver(device)
    finally:
        await srv.stop()

    bk = tmp_path / "bk"
    assert stat.S_IMODE(os.stat(bk).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(bk / "keys" / f"server-{key_id}.key").st_mode) == 0o600
    manifest = read_manifest(bk)
    assert manifest["database"] == "sqlite"
    assert not (bk / "footage").exists() and not (bk / "server.json").exists()
    assert not (bk / "published-checkpoint").exists()

    new_cfg = server_config(tmp_path / "new", **shared_store(footage))
    assert custody(["admin", "--data-dir", str(tmp_path / "new"), "restore", str(bk)]) == 0
    restored = await start_server(new_cfg, clock)
    try:
        assert restored.services.keyring.current.key_id == key_id
        # The old admin token works: it is the same account database.
        admin = Api(restored.url, session, (tmp_path / "old" / "admin-token").read_text().strip())
        shown = await admin.ok("GET", f"/api/v1/devices/{device.device_id}")
        assert device.device_id in str(shown)
        entry = await admin.call("GET", f"/api/v1/devices/{device.device_id}/entries/{before['seq']}")
        assert entry.status == 200, entry.body
        missing = await admin.call("GET", f"/api/v1/devices/{device.device_id}/entries/{after['seq']}")
        assert missing.status == 404  # ingested after the backup: not in it
    finally:
        await restored.stop()


def test_restore_refuses_a_damaged_backup_and_a_used_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "server-k.key").write_text("x")
    import sqlite3

    sqlite3.connect(data / "custody.sqlite3").close()
    cfg = server_config(data)
    report = backup(cfg, tmp_path / "bk")
    assert report.database == "sqlite"
    with pytest.raises(BackupError, match="not empty"):
        backup(cfg, tmp_path / "bk")
    with pytest.raises(BackupError, match="inside the data directory"):
        backup(cfg, data / "bk")
    with pytest.raises(BackupError, match="already holds server keys"):
        restore(cfg, tmp_path / "bk")
    (tmp_path / "bk" / "keys" / "server-k.key").write_text("y")
    with pytest.raises(BackupError, match="does not match its sha256"):
        restore(server_config(tmp_path / "fresh"), tmp_path / "bk")
    with pytest.raises(BackupError, match=r"no backup\.json"):
        restore(server_config(tmp_path / "fresh"), tmp_path)
