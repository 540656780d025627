"""Retention with a fake clock: footage expires exactly when its class says, never while held,
never when linked to a major decision; each removal is recorded with the receipt of what left."""

from __future__ import annotations

import ast
import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from custody.clock import FakeClock
from server.app import REPLICATION, RunningServer, start_server
from server.auth import Principal, Role
from server.db.schema import entries, footage_retention
from server.retention import DAY_MS, YEAR_MS
from server.storage.base import NoWarrant
from server.storage.local import LocalStore
from tests.helpers.device import SimDevice
from tests.integration.server.conftest import Api, server_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


async def recorded(dev: SimDevice) -> None:
    await dev.announce(dev.event("start"))
    await dev.deliver()
    await dev.announce(dev.event("stop"))


async def objects(server: RunningServer, dev: SimDevice) -> list[str]:
    async with server.services.db.read() as conn:
        keys = (await conn.execute(sa.select(entries.c.object_key).where(
            entries.c.device_id == dev.device_id, entries.c.object_key.is_not(None)))).scalars().all()
    return list(keys)


def present(server: RunningServer, key: str) -> bool:
    store = server.services.store
    assert isinstance(store, LocalStore)
    return store._path(key).exists()


async def test_expiry_follows_the_classes_and_holds(server: RunningServer, admin: Api, clock: FakeClock) -> None:
    devs = {name: await admin.enroll(clock) for name in ("unlinked", "case", "major", "held", "case_held")}
    for dev in devs.values():
        await recorded(dev)
    t0 = clock.now_ms()
    handler = await admin.user("ret-handler", "case_handler")
    c1 = (await handler.ok("POST", "/api/v1/cases", {"number": "R-1", "category": "penalty", "title": "t"}))["id"]
    c2 = (await handler.ok("POST", "/api/v1/cases", {"number": "R-2", "category": "penalty", "title": "t",
                                                     "major": True}))["id"]
    c3 = (await handler.ok("POST", "/api/v1/cases", {"number": "R-3", "category": "penalty", "title": "t"}))["id"]
    for case, step, stage, dev in ((c1, "r1", "filing", devs["case"]), (c2, "r2", "decision", devs["major"]),
                                   (c3, "r3", "filing", devs["case_held"])):
        await handler.ok("POST", f"/api/v1/cases/{case}/steps", {"id": step, "stage": stage, "activity": "other"})
        await handler.ok("POST", f"/api/v1/cases/{case}/steps/{step}/links", {
            "device_id": dev.device_id, "recording_id": dev.recording_id, "reason": "r"})
    for case, step in ((c1, "r1"), (c3, "r3")):
        await handler.ok("PATCH", f"/api/v1/cases/{case}/steps/{step}", {"status": "in_progress"})
        await handler.ok("PATCH", f"/api/v1/cases/{case}/steps/{step}", {"status": "completed"})
    case_end = clock.now_ms()
    supervisor = await admin.user("ret-sup", "supervisor")
    rec_hold = await supervisor.ok("POST", "/api/v1/holds", {
        "target": "recording", "device_id": devs["held"].device_id, "recording_id": devs["held"].recording_id,
        "reason": "complaint pending"}, status=201)
    await supervisor.ok("POST", "/api/v1/holds", {"target": "case", "case_id": c3, "reason": "litigation"}, status=201)
    plan = {r["device_id"]: r for r in (await admin.ok("GET", "/api/v1/retention"))["recordings"]}
    assert plan[devs["unlinked"].device_id]["class"] == "unlinked"
    assert plan[devs["case"].device_id]["class"] == "case"
    assert plan[devs["major"].device_id]["class"] == "indefinite"
    assert plan[devs["major"].device_id]["retain_until_ms"] is None
    keys = {name: await objects(server, dev) for name, dev in devs.items()}
    assert all(len(k) == 1 for k in keys.values())
    job = server.services.expiry

    def alive() -> set[str]:
        return {name for name, ks in keys.items() if all(present(server, k) for k in ks)}

    # The wall clock is stepped (set_wall), so the periodic duty does not wake and race the calls here.
    clock.set_wall(t0 + 183 * DAY_MS - 1)
    assert (await job.run())["removed"] == 0
    assert alive() == set(devs)
    clock.set_wall(t0 + 183 * DAY_MS)  # exactly the unlinked class's end
    assert (await job.run())["removed"] == 1
    assert alive() == set(devs) - {"unlinked"}

    clock.set_wall(case_end + 2 * YEAR_MS - 1)
    assert (await job.run())["removed"] == 0
    clock.set_wall(case_end + 2 * YEAR_MS)
    assert (await job.run())["removed"] == 1
    assert alive() == {"major", "held", "case_held"}

    clock.set_wall(clock.now_ms() + 50 * YEAR_MS)
    assert (await job.run())["removed"] == 0
    assert alive() == {"major", "held", "case_held"}
    who = Principal("user", "ret-sup", Role.SUPERVISOR)
    await server.services.holds.lift(rec_hold["id"], "complaint settled", who)
    assert (await job.run())["removed"] == 1
    assert alive() == {"major", "case_held"}

    # Each removal is on record with the class it expired under (and the receipt, via the log's hook).
    async with server.services.db.read() as conn:
        rows = (await conn.execute(sa.select(footage_retention).where(
            footage_retention.c.removed_ms.is_not(None)))).all()
    assert sorted(r.removed_class for r in rows) == ["case", "unlinked", "unlinked"]
    assert all(r.removed_receipt for r in rows)  # the signed receipt of each removed chunk is kept
    # ... and each removal is a leaf of the transparency log.
    assert all(r.log_index is not None for r in rows)
    leaves = await server.services.log.leaves(0, await server.services.log.size())
    assert sum(1 for leaf in leaves if leaf["kind"] == "expiry") == 3
    # The scrubber knows expired footage is gone by design: no object is reported missing.
    report = await server.services.scrubber.run_once(1 << 30)
    assert report.checked == 2 and "missing" not in report.results.values()


async def test_removal_hooks_get_the_receipt(server: RunningServer, admin: Api, clock: FakeClock) -> None:
    dev = await admin.enroll(clock)
    await recorded(dev)
    seen: list[dict[str, Any]] = []

    async def hook(conn: Any, removal: dict[str, Any]) -> None:
        seen.append(removal)

    server.services.expiry.removal_hooks.append(hook)
    clock.set_wall(clock.now_ms() + 184 * DAY_MS)
    await server.services.expiry.run()
    assert len(seen) == 1 and seen[0]["device_id"] == dev.device_id and seen[0]["receipt"]
    assert seen[0]["object_key"] == (await objects(server, dev))[0]


async def test_the_store_refuses_a_removal_without_the_jobs_warrant(server: RunningServer, admin: Api,
                                                                    clock: FakeClock) -> None:
    dev = await admin.enroll(clock)
    await recorded(dev)
    key = (await objects(server, dev))[0]
    with pytest.raises(NoWarrant, match="warrant"):
        await server.services.store.remove_expired(key, object())
    assert present(server, key)


def test_only_the_expiry_job_removes_footage() -> None:
    callers = []
    for path in [*ROOT.joinpath("server").rglob("*.py"), *ROOT.joinpath("simulators").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "remove_expired" and isinstance(node.ctx, ast.Load):
                callers.append(path.relative_to(ROOT).as_posix())
    assert set(callers) == {"server/services/expiry.py"}


async def test_legal_holds_are_set_and_lifted_with_reasons_by_authorised_roles(server: RunningServer, admin: Api,
                                                                               clock: FakeClock) -> None:
    dev = await admin.enroll(clock)
    await recorded(dev)
    reviewer = await admin.user("hold-reviewer", "legal_reviewer")
    handler = await admin.user("hold-handler", "case_handler")
    body = {"target": "recording", "device_id": dev.device_id, "recording_id": dev.recording_id}
    assert (await reviewer.call("POST", "/api/v1/holds", body)).code == "missing_field"  # no reason, no hold
    refused = await handler.call("POST", "/api/v1/holds", {**body, "reason": "r"})
    assert (refused.status, refused.code) == (403, "forbidden_role")
    unknown = await reviewer.call("POST", "/api/v1/holds", {**body, "recording_id": "nope", "reason": "r"})
    assert (unknown.status, unknown.code) == (404, "unknown_recording")
    hold = await reviewer.ok("POST", "/api/v1/holds", {**body, "reason": "inquiry 7"}, status=201)
    assert (hold["set_by"], hold["reason"], hold["active"]) == ("user:hold-reviewer", "inquiry 7", True)
    plan = (await admin.ok("GET", "/api/v1/retention"))["recordings"]
    assert [r["held"] for r in plan if r["device_id"] == dev.device_id] == [True]
    lifted = await reviewer.ok("POST", f"/api/v1/holds/{hold['id']}/lift", {"reason": "inquiry closed"})
    assert (lifted["lifted_by"], lifted["lift_reason"], lifted["active"]) == ("user:hold-reviewer", "inquiry closed",
                                                                              False)
    again = await reviewer.call("POST", f"/api/v1/holds/{hold['id']}/lift", {"reason": "x"})
    assert (again.status, again.code) == (409, "hold_lifted")
    listed = (await handler.ok("GET", "/api/v1/holds"))["holds"]
    assert [h["id"] for h in listed] == [hold["id"]]  # kept on record after lifting


async def test_expired_footage_leaves_the_second_copy_too(tmp_path: Path, clock: FakeClock,
                                                          session: aiohttp.ClientSession) -> None:
    second = tmp_path / "second"
    overrides: dict[str, Any] = {"replication.to": str(second), "replication.delay_s": 0,
                                 "replication.interval_s": 1, "retention.expiry_interval_s": 0}
    cfg = server_config(tmp_path / "data", **overrides)
    srv = await start_server(cfg, clock)
    try:
        admin = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
        dev = await admin.enroll(clock)
        await recorded(dev)
        key = (await objects(srv, dev))[0]
        replication = srv.app[REPLICATION]
        assert (await replication.round()).copied == 1
        copy = LocalStore(second, base_url="", upload_secret=b"").file_of(key)
        assert copy is not None and copy.exists()
        clock.set_wall(clock.now_ms() + 183 * DAY_MS)
        assert (await srv.services.expiry.run())["removed"] == 1
        assert not present(srv, key) and not copy.exists()
        assert (await replication.pending(10)) == []  # nothing left to copy again
    finally:
        await srv.stop()


async def test_governance_commands(server: RunningServer, admin_token: str) -> None:
    base = ["--server", server.url, "--token", admin_token]

    def custody(*args: str) -> str:
        got = subprocess.run([sys.executable, "-m", "custody", *args], capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr
        return got.stdout

    await asyncio.to_thread(custody, "unit", *base, "add", "east", "--name", "East", "--kind", "bureau")
    await asyncio.to_thread(custody, "unit", *base, "add", "east-a", "--name", "A", "--kind", "section",
                            "--parent", "east")
    units = json.loads(await asyncio.to_thread(custody, "unit", *base, "list", "--json"))["units"]
    assert [u["path"] for u in units] == ["/east/", "/east/east-a/"]
    plan = json.loads(await asyncio.to_thread(custody, "retention", *base, "run", "--json"))
    assert plan["removed"] == 0
    holds = json.loads(await asyncio.to_thread(custody, "hold", *base, "list", "--json"))
    assert holds == {"holds": []}
