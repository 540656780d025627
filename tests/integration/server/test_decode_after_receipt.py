"""The first-keyframe decode after the receipt: from the sample ingest held, or from the store.

Ingest keeps each chunk's first video sample from its media check, so the decode that follows
the receipt does not read the whole object back; beyond DECODE_FRAMES_HELD queued decodes (and
after a restart) it reads the stored object. Either way a keyframe that does not decode becomes
a media.decode_failed finding, and the chunk stays verified and receipted.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from custody.clock import FakeClock
from protocol.envelope import Envelope
from protocol.messages import Receipt
from server.app import RunningServer, start_server
from server.media import FirstFrame, first_frame
from server.services import ingest as ingest_module
from server.services.ingest import DecodeJob
from tests.helpers.media import Chunk, make_chunk, with_garbage_keyframe
from tests.integration.server.conftest import Api, server_config
from tests.services.postgres import PostgresDatabase

pytestmark = pytest.mark.integration


def garbage_keyframe(chunk: Chunk) -> Chunk:
    """``chunk`` with its first keyframe zeroed: the media check passes, only decoding fails."""
    return dataclasses.replace(chunk, data=with_garbage_keyframe(chunk.data))


async def decode_state(admin: Api, device_id: str, seq: int) -> str | None:
    """Wait (up to 10 s) for the chunk's decode outcome."""
    for _ in range(200):
        rows = (await admin.ok("GET", f"/api/v1/devices/{device_id}/entries?from_seq={seq}&limit=1"))["entries"]
        if rows[0]["decode"] is not None:
            return str(rows[0]["decode"])
        await asyncio.sleep(0.05)
    return None


def count_reads(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the keys the footage store is asked to read from now on."""
    store, reads = server.services.store, []
    get = store.get

    async def counted(key: str, grant: Any) -> Any:
        reads.append(key)
        return await get(key, grant)

    monkeypatch.setattr(store, "get", counted)
    return reads


@pytest.mark.parametrize("held", [True, False], ids=["sample-held", "read-from-store"])
async def test_decode_after_receipt(any_server: RunningServer, any_admin: Api, clock: FakeClock,
                                    monkeypatch: pytest.MonkeyPatch, held: bool) -> None:
    if not held:  # a backlog: no sample held, every decode reads the object
        monkeypatch.setattr(ingest_module, "DECODE_FRAMES_HELD", 0)
    reads = count_reads(any_server, monkeypatch)
    device = await any_admin.enroll(clock)
    await device.announce(device.event("start"))
    direct = any_server.services.store.kind == "local"
    good = await device.deliver(make_chunk(), direct=direct)
    bad = await device.deliver(garbage_keyframe(make_chunk()), direct=direct)
    for answer in (good, bad):  # the receipt comes first; decoding never takes it back
        assert answer["state"] == "verified" and answer["receipt"]

    assert await decode_state(any_admin, device.device_id, 1) == "ok"
    assert await decode_state(any_admin, device.device_id, 2) == "failed"
    found = (await any_admin.ok("GET", f"/api/v1/findings?device_id={device.device_id}"
                                       "&code=media.decode_failed"))["findings"]
    assert [f["seq"] for f in found] == [2]
    assert "first frame does not decode" in found[0]["evidence"]["error"]
    # Verification step (1) reads the object back from S3 (the local store hashed it as it wrote);
    # a decode reads it only when its sample was not held.
    keys = [Receipt.peek(Envelope.from_bytes(a["receipt"].encode("ascii"))).object_key for a in (good, bad)]
    reads_each = (0 if direct else 1) + (0 if held else 1)
    assert sorted(reads) == sorted(keys * reads_each)


async def test_one_batch_of_held_samples_and_stored_objects(any_server: RunningServer, any_admin: Api,
                                                            clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch decodes its held samples together in one hand-off and reads the others from the
    store; each outcome stays with its own chunk, in the batch's order."""
    ingest = any_server.services.ingest
    monkeypatch.setattr(ingest, "decode_queue", None)  # nothing queued: this test hands over the batch
    device = await any_admin.enroll(clock)
    await device.announce(device.event("start"))
    direct = any_server.services.store.kind == "local"
    good, bad = make_chunk(), garbage_keyframe(make_chunk())
    for chunk in (good, bad, bad, good):
        assert (await device.deliver(chunk, direct=direct))["state"] == "verified"
    reads = count_reads(any_server, monkeypatch)

    def held(chunk: Chunk) -> FirstFrame:
        frame = first_frame(chunk.data)
        assert frame is not None
        return frame

    jobs = [DecodeJob(device.device_id, 1, held(good)), DecodeJob(device.device_id, 2, held(bad)),
            DecodeJob(device.device_id, 3), DecodeJob(device.device_id, 4)]
    assert await ingest.decode_many(jobs) == [True, False, False, True]
    assert [await decode_state(any_admin, device.device_id, seq) for seq in (1, 2, 3, 4)] == [
        "ok", "failed", "failed", "ok"]
    found = (await any_admin.ok("GET", f"/api/v1/findings?device_id={device.device_id}"
                                       "&code=media.decode_failed"))["findings"]
    assert sorted(f["seq"] for f in found) == [2, 3]
    assert len(reads) == 2  # seq 3 and 4 only: a held sample is not read back
    assert await ingest.decode_many(jobs) == [True, False, False, True]  # decided once, answered again
    assert len(reads) == 2


async def test_decode_batch_and_group_take_rows_in_one_order(tmp_path: Path, clock: FakeClock,
                                                             postgres_db: PostgresDatabase,
                                                             session: aiohttp.ClientSession,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL's row locks: a decode batch records its outcomes in key order, the order in which
    a group's transaction locks entries (a repeated entry takes its stored row), so the two
    never wait for each other in a circle. In the receipts' order they deadlocked at 1,000
    devices in the fleet bench, and that batch's outcomes were lost until the next sweep."""
    srv = await start_server(server_config(tmp_path / "data", database_url=postgres_db.async_url), clock)
    try:
        ingest = srv.services.ingest
        monkeypatch.setattr(ingest, "decode_queue", None)  # this test hands over the batch
        admin = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
        keys = []
        for _ in range(2):
            device = await admin.enroll(clock)
            await device.announce(device.event("start"))
            assert (await device.deliver(make_chunk(), direct=True))["state"] == "verified"
            keys.append((device.device_id, 1))
        first, second = sorted(keys)
        engine = srv.services.db.engine
        async with engine.begin() as held:  # a group's transaction, between its two row locks
            await held.execute(ingest_module._ENTRIES_LOCKED, {"b_keys": [first]})
            batch = asyncio.create_task(ingest.decode_many([DecodeJob(*second), DecodeJob(*first)]))
            # Until the batch waits for the held row; AUTOCOMMIT, as PostgreSQL keeps one snapshot
            # of pg_stat_activity for the whole of a transaction.
            async with engine.connect() as watch:
                await wait_for_lock_wait(await watch.execution_options(isolation_level="AUTOCOMMIT"), batch)
            await asyncio.wait_for(held.execute(ingest_module._ENTRIES_LOCKED, {"b_keys": [second]}), 10)
        assert await asyncio.wait_for(batch, 10) == [True, True]
        assert [await decode_state(admin, d, q) for d, q in (first, second)] == ["ok", "ok"]
    finally:
        await srv.stop()


async def wait_for_lock_wait(conn: Any, task: asyncio.Task[Any]) -> None:
    """Wait (up to 10 s) until some PostgreSQL backend waits for a lock; ``task`` must not end first."""
    for _ in range(200):
        if task.done():
            raise AssertionError(f"the batch ended without waiting for the held row: {task.result()}")
        waiting = (await conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"))).scalar_one()
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("no backend waits for a lock")
