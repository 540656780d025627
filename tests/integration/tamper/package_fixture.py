"""Builds, once per test module, a real export (and a forked log) from real servers.

A server records three recordings on two devices, a witness cosigns, and ``custody export``
downloads the package through the API. Then the data directory is copied and both copies keep
going with different entries at the same sequence numbers: a deliberately forked log whose
checkpoints are signed by the same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from custody.cli import main as cli_main
from custody.clock import FakeClock
from server.app import RunningServer, start_server
from tests.helpers.device import SimDevice
from tests.integration.server.conftest import Api, server_config
from tests.integration.tamper.conftest import Recorded, record


@dataclass
class Built:
    """What the tests get."""

    package: Path
    files: dict[str, bytes]
    vkey: str
    fingerprint: str
    server_key_private: bytes
    device_a: str
    device_b: str
    r1: Recorded
    r2: Recorded
    r3: Recorded
    fork_package: Path
    fork_other_checkpoint: Path
    fork_vkey: str
    witness_state: Path
    witnessed: Path
    witness_exit_on_fork: int
    fork_finding_recorded: bool


def unzip(path: Path) -> dict[str, bytes]:
    """Every member of a ZIP."""
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def rezip(files: dict[str, bytes], path: Path) -> Path:
    """Write members to a new ZIP."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    path.write_bytes(buf.getvalue())
    return path


def _witness(url: str, state: Path) -> int:
    return cli_main(["-q", "witness", "--server", url, "--state", str(state), "--once", "--name", "court-witness"])


async def _admin(srv: RunningServer, session: aiohttp.ClientSession) -> Api:
    return Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())


def _export(srv: RunningServer, out: Path, recordings: list[Recorded], case_id: int | None = None) -> int:
    args = ["-q", "export", "-o", str(out), "--reason", "court review of case 1", "--no-progress",
            "--data-dir", str(srv.services.datadir.root)]
    if case_id is not None:
        args.insert(2, str(case_id))
    for r in recordings:
        args += ["--recording", f"{r.device.device_id}/{r.recording_id}"]
    return cli_main(args)


async def _case(admin: Api, recordings: list[Recorded]) -> int:
    """A case with two steps; recordings 1 and 2 document the first, recording 3 the second."""
    await admin.user("handler", "case_handler")
    case_id = int((await admin.ok("POST", "/api/v1/cases", {"number": "T-1", "category": "inspection",
                                                             "title": "market inspection", "handler": "handler"}))[
        "id"])
    for step in ("s-inspect", "s-evidence"):
        await admin.ok("POST", f"/api/v1/cases/{case_id}/steps", {"id": step, "stage": "investigation",
                                                                  "activity": "other"})
    for r, step in zip(recordings, ("s-inspect", "s-inspect", "s-evidence"), strict=True):
        await admin.ok("POST", f"/api/v1/cases/{case_id}/steps/{step}/links", {
            "device_id": r.device.device_id, "recording_id": r.recording_id, "reason": "this is the inspection"})
    return case_id


async def build(tmp: Path) -> Built:
    """Record, witness, export; then fork the log and export from one branch."""
    clock = FakeClock(start_ms=time.time_ns() // 1_000_000)
    data = tmp / "data"
    quiet: dict[str, Any] = {"scrub.enabled": False, "log.checkpoint_interval_s": 3600}
    cfg = server_config(data, **quiet)
    async with aiohttp.ClientSession() as session:
        srv = await start_server(cfg, clock)
        try:
            admin = await _admin(srv, session)
            a = await admin.enroll(clock)
            b = await admin.enroll(clock)
            r1 = await record(a, 3, seed=1)
            r2 = await record(a, 2, seed=2)
            r3 = await record(b, 2, seed=3)
            await srv.services.log.checkpoint_round()
            # a witness (the court's) cosigns the checkpoint before the export
            state = tmp / "witness"
            await asyncio.to_thread(_witness, srv.url, state)  # first run: makes its key (not registered yet)
            await admin.ok("POST", "/api/v1/log/witnesses", {"vkey": (state / "witness.vkey").read_text().strip()})
            assert await asyncio.to_thread(_witness, srv.url, state) == 0
            witnessed = tmp / "witnessed-before-export.note"
            shutil.copy(state / "latest.note", witnessed)
            package = tmp / "case.zip"
            case_id = await _case(admin, [r1, r2, r3])
            assert await asyncio.to_thread(_export, srv, package, [], case_id) == 0
            vkey = srv.services.log.key_info()["vkey"]
            fingerprint = srv.services.keyring.current.public.fingerprint
            private = srv.services.keyring.current.private_bytes()
        finally:
            await srv.stop()
        # -- the fork: two copies of the same log go on with different histories
        other = tmp / "data-other"
        shutil.copytree(data, other)
        with contextlib.suppress(FileNotFoundError):
            (other / "server.json").unlink()
        srv_a = await start_server(cfg, clock)
        srv_b = await start_server(server_config(other, **quiet), clock)
        try:
            admin_a, admin_b = await _admin(srv_a, session), await _admin(srv_b, session)
            dev_a = SimDevice(srv_a.url, session, clock, key=a.key)
            dev_b = SimDevice(srv_b.url, session, clock, key=a.key)
            for d in (dev_a, dev_b):
                d.seq, d.prev = a.seq, a.prev
            fork_a = await record(dev_a, 2, seed=7)
            await record(dev_b, 2, seed=8)  # same sequence numbers, other footage
            cp_a = await srv_a.services.log.checkpoint_round()
            cp_b = await srv_b.services.log.checkpoint_round()
            assert cp_a is not None and cp_b is not None
            other_cp = tmp / "other-branch.note"
            other_cp.write_bytes(await srv_b.services.log.checkpoint())
            fork_package = tmp / "fork.zip"
            assert await asyncio.to_thread(_export, srv_a, fork_package, [fork_a]) == 0
            # the court's witness sees branch A's history, then branch B shows it another one
            assert await asyncio.to_thread(_witness, srv_a.url, state) == 0
            witness_exit = await asyncio.to_thread(_witness, srv_b.url, state)
            findings = await admin_b.ok("GET", "/api/v1/findings?code=log.fork")
            await admin_a.ok("GET", "/api/v1/me")
        finally:
            await srv_a.stop()
            await srv_b.stop()
    return Built(package, unzip(package), vkey, fingerprint, private, a.device_id, b.device_id, r1, r2, r3,
                 fork_package, other_cp, vkey, state, witnessed, witness_exit, bool(findings["findings"]))
