"""Backup and restore: database, keys and secrets come back on a fresh data dir; footage stays in its store."""

from __future__ import annotations

import gc
import os
import stat
import warnings
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


async def test_restore_keeps_old_exports_verifiable_and_never_rolls_back_the_log(
    tmp_path: Path, clock: FakeClock, session: aiohttp.ClientSession
) -> None:
    """Back up, ingest more, restore onto a fresh data dir: an export made before the backup still
    verifies offline, and the restored server refuses to start behind the checkpoint it had published
    (the operator keeps that file outside the backup); with a checkpoint inside the backup it starts."""
    from custody.verify import read_key, verify_path
    from server.log_guard import LogRolledBack

    footage = tmp_path / "footage"
    quiet: dict[str, Any] = {**shared_store(footage), "scrub.enabled": False}
    cfg = server_config(tmp_path / "old", **quiet)
    srv = await start_server(cfg, clock)
    try:
        admin = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
        device = await admin.enroll(clock)
        await device.announce(device.event("start"))
        await deliver(device)
        await deliver(device)
        assert await srv.services.log.checkpoint_round() is not None
        vkey = srv.services.log.key_info()["vkey"]
        async with session.post(srv.url + "/api/v1/exports",
                                json={"recordings": f"{device.device_id}/{device.recording_id}",
                                      "reason": "test: export before the backup"},
                                headers={"Authorization": f"Bearer {admin.token}"}) as r:
            assert r.status == 200, await r.text()
            (tmp_path / "before.zip").write_bytes(await r.read())
        inside = (tmp_path / "old" / "published-checkpoint").read_text()
        assert custody(["admin", "--data-dir", str(tmp_path / "old"), "backup", str(tmp_path / "bk")]) == 0
        await deliver(device)  # ingested after the backup, and published
        assert await srv.services.log.checkpoint_round() is not None
        beyond = (tmp_path / "old" / "published-checkpoint").read_text()
    finally:
        await srv.stop()
    assert beyond != inside

    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "beyond").write_text(beyond)
    (tmp_path / "kept" / "inside").write_text(inside)
    for name, expect_start in (("beyond", False), ("inside", True)):
        data = tmp_path / f"new-{name}"
        assert custody(["admin", "--data-dir", str(data), "restore", str(tmp_path / "bk"),
                        "--published-checkpoint", str(tmp_path / "kept" / name)]) == 0
        new_cfg = server_config(data, **quiet)
        if not expect_start:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with pytest.raises(LogRolledBack, match="was already published"):
                    await start_server(new_cfg, clock)
                gc.collect()
            # The refused start closed what it had opened: no pooled connection left to the collector.
            assert not [w for w in caught if "connection" in str(w.message)], [str(w.message) for w in caught]
            continue
        restored = await start_server(new_cfg, clock)
        await restored.stop()

    # The export made before the backup verifies offline with nothing but the server's key.
    report = verify_path(tmp_path / "before.zip", read_key(vkey), [], [], True)
    assert report.ok, "\n".join(report.lines())
