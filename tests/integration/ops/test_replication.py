"""The second copy: verified chunks are copied, read back and checked; the audit shows what has no copy yet."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

from custody.cli import main as custody
from custody.clock import FakeClock
from server.app import RunningServer, start_server
from server.db.schema import entries
from server.services.replication import overdue, second_store
from server.storage.local import LocalStore
from tests.integration.ops.conftest import deliver
from tests.integration.server.conftest import Api, server_config


def no_copy(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The storage.no_second_copy findings of an audit report."""
    return [f for f in report["findings"] if f["code"] == "storage.no_second_copy"]


async def stored(srv: RunningServer, device_id: str, seq: Any) -> Any:
    """The entry row: object key, sha256, size."""
    async with srv.services.db.read() as conn:
        return (await conn.execute(sa.select(entries).where(entries.c.device_id == device_id,
                                                             entries.c.seq == seq))).one()


def test_overdue_is_a_pure_decision() -> None:
    assert not overdue(1_000, 60_999, 60_000)
    assert overdue(1_000, 61_000, 60_000)


async def test_second_copy_by_the_replicate_command(tmp_path: Path, clock: FakeClock,
                                                    session: aiohttp.ClientSession) -> None:
    second = tmp_path / "second"
    overrides: dict[str, Any] = {"replication.to": str(second), "replication.copy_in_server": False,
                                 "replication.delay_s": 60}
    cfg = server_config(tmp_path / "data", **overrides)
    srv = await start_server(cfg, clock)
    try:
        admin = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
        device = await admin.enroll(clock)
        await device.announce(device.event("start"))
        first, other = await deliver(device), await deliver(device)
        seqs = [first["seq"], other["seq"]]
        # (1) within the delay a missing copy is not a finding yet
        assert no_copy(await admin.ok("GET", "/api/v1/audit")) == []
        clock.advance(61)
        found = no_copy(await admin.ok("GET", "/api/v1/audit"))
        assert [f["evidence"]["seqs"] for f in found] == [seqs]
        assert found[0]["evidence"]["target"] == str(second.resolve())

        # (2) a different body already under one key in the second store: that copy fails, and stays a finding
        # (written where a store of the earlier layout kept it, DEVICE/SEQ/SHA256: still found there)
        bad_key = (await stored(srv, device.device_id, other["seq"])).object_key
        (second / bad_key).parent.mkdir(parents=True)
        (second / bad_key).write_bytes(b"not the chunk")

        # (3) the command copies the rest, reads each copy back and checks it against the entry
        code = await asyncio.to_thread(custody, ["admin", "--data-dir", str(cfg.data_dir), "replicate",
                                                 "--to", str(second), "--once", "--json"])
        assert code == 0
        good = await stored(srv, device.device_id, first["seq"])
        copy_path = LocalStore(second, base_url="", upload_secret=b"").file_of(good.object_key)
        assert copy_path is not None
        copy = copy_path.read_bytes()
        assert hashlib.sha256(copy).hexdigest() == good.sha256 and len(copy) == good.size
        found = no_copy(await admin.ok("GET", "/api/v1/audit"))
        assert [f["evidence"]["seqs"] for f in found] == [[other["seq"]]]
    finally:
        await srv.stop()


async def test_second_copy_inside_the_server(tmp_path: Path, clock: FakeClock,
                                             session: aiohttp.ClientSession) -> None:
    second = tmp_path / "second"
    overrides: dict[str, Any] = {"replication.to": str(second), "replication.delay_s": 0, "replication.interval_s": 1}
    cfg = server_config(tmp_path / "data", **overrides)
    srv = await start_server(cfg, clock)
    try:
        admin = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
        device = await admin.enroll(clock)
        await device.announce(device.event("start"))
        await deliver(device)
        assert len(no_copy(await admin.ok("GET", "/api/v1/audit"))) == 1
        for _ in range(100):
            clock.advance(1)
            await asyncio.sleep(0.05)
            if not no_copy(await admin.ok("GET", "/api/v1/audit")):
                break
        assert no_copy(await admin.ok("GET", "/api/v1/audit")) == []
        store = second_store(cfg, clock)
        await store.start()
        assert any(second.rglob("*"))
    finally:
        await srv.stop()
