"""One sequencer for several server processes: concurrent appenders on one database build one tree."""

from __future__ import annotations

import asyncio
import base64
import random
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from custody.clock import FakeClock
from protocol.checkpoint import SignedNote
from protocol.leaves import ExpiryLeaf
from protocol.merkle import MemoryTree, inclusion_proof
from server.config import LogConfig
from server.db.database import Database, database_url
from server.db.schema import log_checkpoints
from server.keyring import ServerKeyring
from server.log import tree
from server.log.service import LogService

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_concurrent_appenders_share_one_tree(backend: str, tmp_path: Path,
                                                   request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = database_url(None, tmp_path / "log.sqlite3")
        processes = 1  # SQLite: one process owns the file; its writers queue in that process
    else:
        url = database_url(request.getfixturevalue("postgres_db").async_url, tmp_path)
        processes = 3  # three engines stand for three server processes
    clock = FakeClock(start_ms=time.time_ns() // 1_000_000)
    dbs = [Database.connect(url, pool_size=4) for _ in range(processes)]
    try:
        await dbs[0].migrate()
        services = []
        for db in dbs:
            keyring = ServerKeyring(db, tmp_path / "keys", clock)
            (tmp_path / "keys").mkdir(exist_ok=True)
            await keyring.load()
            log = LogService(db, clock, keyring, LogConfig())
            await log.start()
            services.append(log)

        def leaf(n: int) -> ExpiryLeaf:
            return ExpiryLeaf(v=1, leaf="expiry", device_id="a" * 24, seq=n, stored_sha256=f"{n:064x}",
                              time_ms=clock.now_ms())

        async def appender(i: int) -> list[int]:
            # Leaves one at a time and in groups of up to five (group-committed receipts append
            # many under one lock); a group may repeat a subject, which must be appended once.
            rng = random.Random(i)
            todo, out = list(range(i, 120, len(services) * 2)), []
            while todo:
                size = rng.randint(1, 5)
                group, todo = todo[:size], todo[size:]
                service = services[group[0] % len(services)]
                if len(group) == 1:
                    out.append((await service.append_now(leaf(group[0]), f"expiry:{group[0]}")).index)
                    continue
                async with service.db.write() as conn:
                    placed = await service.append_many(conn, [(leaf(n), f"expiry:{n}") for n in group + group[:1]])
                assert [a.new for a in placed] == [True] * len(group) + [False]
                assert placed[-1].index == placed[0].index
                out += [a.index for a in placed[:-1]]
            return out

        results = await asyncio.gather(*(appender(i) for i in range(len(services) * 2)))
        indexes = sorted(x for r in results for x in r)
        assert indexes == list(range(120))  # every leaf exactly once, no index twice
        # appending the same subject again is a no-op that answers the first index
        again = await services[-1].append_now(leaf(5), "expiry:5")
        assert not again.new
        # the stored perfect-subtree hashes are those of the tree rebuilt from the leaves in index order
        memory = MemoryTree()
        for item in await services[0].leaves(0, 1000):
            memory.append(base64.b64decode(item["leaf"]))
        async with dbs[0].read() as conn:
            for size in (1, 2, 3, 7, 8, 77, 119, 120):
                assert await tree.tree_root(conn, size) == memory.root(size)
            for index in (0, 5, 64, 119):
                assert await tree.tree_inclusion(conn, index, 120) == inclusion_proof(memory.node, index, 120)
    finally:
        for db in dbs:
            await db.close()


async def test_checkpoint_rounds_of_several_processes_neither_collide_nor_go_back(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Three processes sign checkpoints of one growing tree at once: each size once, published in order."""
    url = database_url(request.getfixturevalue("postgres_db").async_url, tmp_path)
    clock = FakeClock(start_ms=time.time_ns() // 1_000_000)
    dbs = [Database.connect(url, pool_size=4) for _ in range(3)]
    published: list[int] = []

    async def publisher(note: bytes) -> None:
        # A broker takes its time to acknowledge: what it holds last is what arrived last.
        await asyncio.sleep(random.uniform(0, 0.02))
        published.append(SignedNote.parse(note).checkpoint().size)

    try:
        await dbs[0].migrate()
        (tmp_path / "keys").mkdir()
        services = []
        for db in dbs:
            keyring = ServerKeyring(db, tmp_path / "keys", clock)
            await keyring.load()
            log = LogService(db, clock, keyring, LogConfig())
            await log.start()
            log.add_publisher(publisher)
            services.append(log)

        def leaf(n: int) -> ExpiryLeaf:
            return ExpiryLeaf(v=1, leaf="expiry", device_id="b" * 24, seq=n, stored_sha256=f"{n:064x}",
                              time_ms=clock.now_ms())

        async def appender() -> None:
            for n in range(60):
                await services[n % 3].append_now(leaf(n), f"expiry:{n}")

        async def signer(log: LogService) -> list[bytes | None]:
            return [await log.make_checkpoint() for _ in range(40)]

        # (1) no round fails (two processes signing one size at once failed on the primary key)
        signed = asyncio.gather(*(signer(s) for s in services))
        await asyncio.gather(appender(), signed)
        made = [n for r in signed.result() for n in r if n is not None]
        last = await services[1].make_checkpoint()  # the signers may have finished before the last append
        made += [last] if last is not None else []
        # (2) each size signed once, and a round that found the tree not grown made nothing
        async with dbs[0].read() as conn:
            sizes = [int(s) for s in (await conn.execute(sa.select(log_checkpoints.c.size)
                                                         .order_by(log_checkpoints.c.size))).scalars()]
        assert len(made) == len(sizes) == len(set(sizes)) > 1
        # (3) what went out only grows (each process publishes the newest there is, one at a time), up to the newest
        assert published == sorted(published) and published[-1] == sizes[-1] == 60, published
    finally:
        for db in dbs:
            await db.close()
