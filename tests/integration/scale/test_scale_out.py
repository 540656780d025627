"""Scale-out: two ``custody server`` processes on one PostgreSQL, one S3 bucket and one Mosquitto.

Simulated devices (the agent's own classes, replayed 1 s chunks, real time) record while the two
processes split ingest: MQTT entries through the shared subscription, HTTP uploads half to each
process, every device knowing both URLs. One process is SIGKILLed while uploads and verifications
are in flight; the devices keep recording, those of the dead process fail over to the survivor,
and once every device has a verified receipt for every entry it committed, the test checks:

1. every committed entry is in the database once, verified, with one receipt, and the receipt each
   device holds is exactly the server's (a second verification would have signed another);
2. the transparency log is one tree: leaves contiguous from 0 to the tree size, one leaf per entry,
   each receipt's log index naming that entry's leaf;
3. a checkpoint taken before the kill is consistent (RFC 6962 proof from the survivor's public
   endpoint) with the survivor's final one, and every entry's inclusion proof verifies against it;
4. a device's recordings exported from the survivor pass ``custody verify`` offline, with the
   pre-kill checkpoint given as one the verifier saw earlier.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
import yaml

from agent.buffer import BufferedEntry
from agent.media.config import MediaConfig
from custody.cli import main as custody
from custody.clock import SystemClock
from protocol.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from protocol.envelope import Envelope
from protocol.keys import VerifyKey
from protocol.leaves import EntryLeaf, parse_leaf
from protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from protocol.messages import Receipt
from server.db.database import Database, database_url
from server.db.schema import entries, findings, log_leaves, log_state
from simulators.fleet import DeviceSpec, SimulatedDevice
from simulators.replay import templates
from tests.services.mosquitto import MosquittoBroker
from tests.services.ports import LOOPBACK, die_with_parent, free_port, log_tail, terminate
from tests.services.postgres import PostgresDatabase
from tests.services.s3 import LocalStackS3

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
DEVICES = 8
BEFORE_KILL_S = 6.0  # recording with both processes up
AFTER_KILL_S = 6.0  # recording with the survivor alone
MEDIA = MediaConfig(width=160, height=120, chunk_seconds=1, pre_event_seconds=0, video_bitrate=200_000)
#: Findings that would mean an entry was lost, doubled or altered on the way.
BAD_FINDINGS = ("chain.gap", "chain.prev_mismatch", "chain.fork", "chain.seq_reuse", "chunk.conflict",
                "chunk.verify_failed", "media.decode_failed", "log.fork")


@dataclass
class ServerProcess:
    """One ``custody server --config FILE`` process: its own data dir and port, the shared config otherwise."""

    name: str
    config: Path
    data_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The API base URL."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log(self) -> Path:
        """Its stdout and stderr."""
        return self.data_dir.parent / f"{self.name}.log"

    def start(self) -> None:
        """Start the process (from this checkout, whatever the venv's install points at)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "custody", "server", "--config", str(self.config),
                 "--data-dir", str(self.data_dir), "--port", str(self.port)],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent)

    async def wait_ready(self, session: aiohttp.ClientSession, within_s: float = 30) -> None:
        """Until /healthz answers (the process exiting first is an error with its log)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited:\n{log_tail(self.log)}"
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(self.url + "/healthz") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} did not answer in {within_s} s:\n{log_tail(self.log)}")

    def kill(self) -> None:
        """SIGKILL: no clean-up, no last words (what a crashed machine looks like to the others)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is not None:
            terminate(self.proc)


class Admin:
    """The admin token against one process."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        self.session, self.url, self.token = session, url, token

    async def get(self, path: str) -> Any:
        async with self.session.get(self.url + path, headers={"Authorization": f"Bearer {self.token}"}) as r:
            assert r.status == 200, (path, r.status, await r.text())
            return await r.json()

    async def enrollment_token(self) -> str:
        async with self.session.post(self.url + "/api/v1/enrollment-tokens", json={},
                                     headers={"Authorization": f"Bearer {self.token}"}) as r:
            assert r.status == 201, await r.text()
            return str((await r.json())["token"])

    async def public(self, path: str) -> bytes:
        async with self.session.get(self.url + path) as r:
            assert r.status == 200, (path, r.status, await r.text())
            return await r.read()


@dataclass
class Cluster:
    """The shared services and the two processes."""

    processes: list[ServerProcess]
    database: Database
    session: aiohttp.ClientSession
    admin_token: str

    def admin(self, proc: ServerProcess) -> Admin:
        return Admin(self.session, proc.url, self.admin_token)


def write_config(path: Path, pg: PostgresDatabase, s3: LocalStackS3, bucket: str, broker: MosquittoBroker) -> None:
    """One config file for both processes; each gets its data dir and port on the command line."""
    config = {
        "http": {"access_log": False},
        "database": {"url": pg.async_url},
        "storage": {"backend": "s3", "s3": {
            "endpoint_url": s3.endpoint_url, "bucket": bucket, "region": s3.region,
            "access_key_id": s3.access_key, "secret_access_key": s3.secret_key, "retention_days": 1}},
        "mqtt": {"url": broker.url},
        # Local-store upload URLs are not used with S3, but a process must accept the other's.
        "auth": {"upload_secret": "scale-out-test-upload-secret-0123456789"},
        "log": {"checkpoint_interval_s": 1},
        # The scrubber re-reads and decodes every chunk: work this test does not look at, on 2 cores.
        "scrub": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


@pytest.fixture
async def cluster(tmp_path: Path, postgres_db: PostgresDatabase, s3: LocalStackS3, s3_bucket: str,
                  mosquitto: MosquittoBroker) -> AsyncIterator[Cluster]:
    config = tmp_path / "server.yaml"
    write_config(config, postgres_db, s3, s3_bucket, mosquitto)
    # (a) the schema, once, before any process starts (each one's start-up migration is then a no-op)
    database = Database.connect(database_url(postgres_db.async_url, tmp_path), pool_size=2)
    await database.migrate()
    first = ServerProcess("server-a", config, tmp_path / "a")
    second = ServerProcess("server-b", config, tmp_path / "b")
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        # (b) the first process makes the server key; the second gets the same key files, as an
        # operator copies keys/ to every machine (docs/SERVER.md, "Running several server processes")
        first.start()
        await first.wait_ready(session)
        second.data_dir.mkdir(mode=0o700)
        shutil.copytree(first.data_dir / "keys", second.data_dir / "keys")
        second.start()
        await second.wait_ready(session)
        token = (first.data_dir / "admin-token").read_text().strip()
        c = Cluster([first, second], database, session, token)
        for proc in c.processes:  # both on the broker, in the shared-subscription group
            deadline = time.monotonic() + 20
            while not (mqtt := (await c.admin(proc).get("/api/v1/fleet"))["mqtt"]).get("connected"):
                assert time.monotonic() < deadline, f"{proc.name} never connected to the broker"
                await asyncio.sleep(0.1)
            assert mqtt["shared_subscriptions"] and mqtt["protocol"] == "5", mqtt
        yield c
    finally:
        for proc in (first, second):
            proc.stop()
        await session.close()
        await database.close()


class ReceiptsHeld:
    """The receipts each device accepted (HTTP answer or MQTT), recorded as the buffer checks them."""

    def __init__(self) -> None:
        self.by_entry: dict[tuple[str, int], bytes] = {}

    def watch(self, device: SimulatedDevice) -> None:
        buffer = device.agent.buffer
        check = buffer.accept_receipt

        def accept(receipt: bytes, keys: Sequence[VerifyKey]) -> BufferedEntry:
            freed = check(receipt, keys)  # raises, freeing nothing, unless the receipt verifies
            key = (device.device_id, freed.seq)
            assert key not in self.by_entry, f"{key} freed twice"
            self.by_entry[key] = bytes(receipt)
            return freed

        buffer.accept_receipt = accept  # type: ignore[method-assign, assignment]


async def unverified(db: Database) -> set[tuple[str, int]]:
    """Entries announced (over MQTT or HTTP) and not verified yet."""
    async with db.read() as conn:
        return {(r.device_id, r.seq) for r in (await conn.execute(sa.select(entries.c.device_id, entries.c.seq).where(
            entries.c.state != "verified"))).all()}


def b64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in items]


async def test_one_process_killed_mid_run_loses_and_doubles_nothing(cluster: Cluster, tmp_path: Path) -> None:
    started = time.monotonic()
    a, b = cluster.processes
    clock = SystemClock()
    chunks = templates(width=160, height=120, bitrate=200_000, chunk_seconds=1, count=3)
    held = ReceiptsHeld()
    devices = [SimulatedDevice(DeviceSpec(f"dev-{i}", True, MEDIA), tmp_path / "devices", clock,
                               session=cluster.session, replay_chunks=chunks) for i in range(DEVICES)]
    try:
        # (1) half the devices enroll through and deliver to each process; each knows the other as fallback
        for i, dev in enumerate(devices):
            home, other = (a, b) if i % 2 == 0 else (b, a)
            await dev.open(await cluster.admin(home).enrollment_token(), servers=[home.url, other.url])
            held.watch(dev)
        for dev in devices:
            assert dev.agent.mqtt is not None
            async with asyncio.timeout(20):
                await dev.agent.mqtt.connected.wait()
        for dev in devices:
            await dev.agent.start_recording(reason="scale-out")
        await asyncio.sleep(BEFORE_KILL_S)

        # (2) both processes took a share of the MQTT entries; a checkpoint as a verifier saw it before the kill
        shares = [(await cluster.admin(p).get("/api/v1/fleet"))["mqtt"]["accepted"].get("entry", 0)
                  for p in (a, b)]
        assert min(shares) > 0, shares
        before_note = await cluster.admin(a).public("/api/v1/log/checkpoint")
        vkey = (await cluster.admin(b).get("/api/v1/log/key"))["vkey"]
        verifier = NoteVerifier.from_vkey(vkey)
        before, _ = open_checkpoint(before_note, verifier)

        # (3) SIGKILL the first process the moment entries are in flight (announced, not yet verified)
        async with asyncio.timeout(5):
            while not await unverified(cluster.database):
                await asyncio.sleep(0.02)
        in_flight_devices = sum(len(d.agent.buffer.entries()) for d in devices)
        a.kill()
        killed_at = time.monotonic()
        left_over = await unverified(cluster.database)  # what the dead process can no longer finish
        await asyncio.sleep(AFTER_KILL_S)
        for dev in devices:
            await dev.agent.stop_recording(reason="scale-out")

        # (4) every device ends with every entry receipted and freed
        async with asyncio.timeout(45):
            for dev in devices:
                assert dev.agent.uploader is not None
                while dev.agent.buffer.entries():
                    dev.agent.uploader.wake()
                    await asyncio.sleep(0.2)
        settled_s = time.monotonic() - killed_at
        moved = [dev for dev in devices[::2] if dev.agent.client is not None and dev.agent.client.api_url == b.url]
        assert len(moved) == len(devices[::2]), "the dead process's devices must have moved to the survivor"

        # (5) the database: each committed entry once, verified, with the very receipt the device holds
        async with cluster.database.read() as conn:
            rows = (await conn.execute(sa.select(entries).order_by(entries.c.device_id, entries.c.seq))).all()
            leaves = (await conn.execute(sa.select(log_leaves.c.idx, log_leaves.c.subject, log_leaves.c.leaf)
                                         .order_by(log_leaves.c.idx))).all()
            size = int((await conn.execute(sa.select(log_state.c.size))).scalar_one())
            bad = (await conn.execute(sa.select(findings.c.code, findings.c.message).where(
                findings.c.code.in_(BAD_FINDINGS), findings.c.closed_ms.is_(None)))).all()
        assert bad == [], bad
        by_device: dict[str, list[Any]] = {}
        for row in rows:
            by_device.setdefault(row.device_id, []).append(row)
        assert sorted(by_device) == sorted(d.device_id for d in devices)
        chunk_count = 0
        for dev in devices:
            head = dev.agent.buffer.head_seq
            assert head is not None
            mine = by_device[dev.device_id]
            assert [r.seq for r in mine] == list(range(head + 1)), f"{dev.spec.name}: entries missing or extra"
            for r in mine:
                assert r.state == "verified" and r.receipt is not None, (dev.spec.name, r.seq, r.state)
                assert held.by_entry[(dev.device_id, r.seq)] == bytes(r.receipt), \
                    f"{dev.spec.name} seq {r.seq}: the device holds another receipt than the server"
                if r.kind == "chunk":
                    chunk_count += 1
                    assert [s["status"] for s in r.verification if "status" in s] == ["pass"] * 5, r.verification
        assert len(held.by_entry) == len(rows)
        verified = {(r.device_id, r.seq) for r in rows if r.state == "verified"}
        assert left_over <= verified, "entries in flight at the kill must be finished by the survivor"

        # (6) one tree: contiguous leaves, one per entry, where each receipt says
        assert [leaf.idx for leaf in leaves] == list(range(size)), "leaf indexes must be 0..size-1, once each"
        entry_leaves = {leaf.subject: leaf for leaf in leaves if leaf.subject.startswith("entry:")}
        assert len(entry_leaves) == len(rows)
        receipts = {}
        for r in rows:
            receipt = Receipt.peek(Envelope.from_bytes(bytes(r.receipt)))
            receipts[(r.device_id, r.seq)] = receipt
            leaf = entry_leaves[f"entry:{r.device_id}:{r.seq}"]
            assert receipt.log_index == leaf.idx and receipt.server_time_ms == r.verified_ms
            parsed = parse_leaf(bytes(leaf.leaf))
            assert isinstance(parsed, EntryLeaf) and parsed.entry_hash == r.entry_hash

        # (7) the survivor's final checkpoint covers the whole tree and extends the pre-kill one
        final = await final_checkpoint(cluster.admin(b), verifier, size)
        assert final.size >= before.size
        proof = json.loads(await cluster.admin(b).public(
            f"/api/v1/log/proof/consistency?from={before.size}&to={final.size}"))
        verify_consistency(before.size, final.size, b64(proof["proof"]), before.root, final.root)
        for (device_id, seq), receipt in receipts.items():
            assert receipt.log_index is not None
            inc = json.loads(await cluster.admin(b).public(
                f"/api/v1/log/proof/inclusion?index={receipt.log_index}&size={final.size}"))
            assert parse_leaf(base64.b64decode(inc["leaf"])) == parse_leaf(bytes(entry_leaves[
                f"entry:{device_id}:{seq}"].leaf))
            verify_inclusion(receipt.log_index, final.size, leaf_hash(base64.b64decode(inc["leaf"])),
                             b64(inc["proof"]), final.root)

        # (8) one device's recording, exported by the survivor, verifies offline
        (tmp_path / "before.note").write_bytes(before_note)
        package = tmp_path / "dev-0.zip"
        export = ["-q", "export", "--server", b.url, "--token", cluster.admin_token, "-o", str(package),
                  "--reason", "scale-out test", "--no-progress", "--device", devices[0].device_id]
        assert await asyncio.to_thread(custody, export) == 0
        assert await asyncio.to_thread(custody, ["-q", "verify", str(package), "--server-key", vkey,
                                                 "--checkpoint", str(tmp_path / "before.note")]) == 0
        # (9) nothing went wrong on the way: no refusal or rejected receipt on a device, no error in the survivor
        for dev in devices:
            assert dev.agent.uploader is not None
            stats = dev.agent.uploader.stats
            assert (stats.refused, stats.receipts_rejected) == (0, 0), (dev.spec.name, stats.last_error)
        survivor_log = b.log.read_text(encoding="utf-8", errors="replace")
        assert "Traceback" not in survivor_log and " ERROR " not in survivor_log, log_tail(b.log, 80)
        retries = sum(dev.agent.uploader.stats.retries for dev in devices if dev.agent.uploader is not None)
        print(f"\nscale-out: {DEVICES} devices, {len(rows)} entries ({chunk_count} chunks); at the kill "
              f"{len(left_over)} entries announced and not verified (all finished by the survivor), "
              f"{in_flight_devices} without a receipt on the devices; MQTT entry shares before the kill {shares}; "
              f"{len(moved)} devices failed over; settled {settled_s:.1f} s after the kill; "
              f"tree {before.size} -> {final.size}; {retries} upload retries; {time.monotonic() - started:.1f} s")
    finally:
        for dev in devices:
            with contextlib.suppress(Exception):
                await dev.close()


async def final_checkpoint(admin: Admin, verifier: NoteVerifier, size: int, within_s: float = 15) -> Checkpoint:
    """The survivor's latest checkpoint once it covers ``size`` leaves (it signs one every second)."""
    deadline = time.monotonic() + within_s
    while True:
        cp, _ = open_checkpoint(await admin.public("/api/v1/log/checkpoint"), verifier)
        if cp.size >= size or time.monotonic() > deadline:
            assert cp.size >= size, (cp.size, size)
            return cp
        await asyncio.sleep(0.2)
