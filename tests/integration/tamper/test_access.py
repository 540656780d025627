"""Every read of footage is in the access log before a byte is served; nothing reads footage without a grant."""

from __future__ import annotations

import ast
import io
import zipfile
from pathlib import Path

import pytest

from custody.clock import FakeClock
from server.api.routes import ROUTES, Route
from server.app import RunningServer
from server.storage.grant import AccessGrant, GrantError
from tests.integration.server.conftest import Api
from tests.integration.tamper.conftest import record

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
FOOTAGE_TYPES = {"video/mp4", "application/zip"}
#: Hand-written: the routes that serve footage. A new one must be added here and marked footage=True.
FOOTAGE_ROUTES = {("GET", "/api/v1/devices/{device_id}/entries/{seq}/footage"),
                  ("GET", "/api/v1/devices/{device_id}/recordings/{recording_id}/mp4"),
                  ("POST", "/api/v1/exports")}


def test_footage_routes_are_exactly_the_marked_ones() -> None:
    marked = {(r.method, r.openapi_path) for r in ROUTES if r.footage}
    assert marked == FOOTAGE_ROUTES
    for r in ROUTES:
        assert r.footage == (r.response in FOOTAGE_TYPES), f"{r.method} {r.path} serves {r.response}"


def test_only_the_access_log_mints_grants() -> None:
    allowed = {REPO / "server/services/access.py", REPO / "server/storage/grant.py"}
    offenders = []
    for package in ("server", "custody", "agent", "simulators"):
        for path in (REPO / package).rglob("*.py"):
            if path in allowed:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Name | ast.alias | ast.Attribute):
                    name = getattr(node, "id", None) or getattr(node, "name", None) or getattr(node, "attr", None)
                    if name in ("MINT", "_Capability"):
                        offenders.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', '?')}")
    assert not offenders, offenders
    with pytest.raises(GrantError):
        AccessGrant(object(), 1, "view", None)  # type: ignore[arg-type]


def concrete(route: Route, device_id: str, seq: int, recording_id: str) -> str:
    return (route.path.replace("{device_id}", device_id).replace("{seq}", str(seq))
            .replace("{recording_id}", recording_id))


async def test_every_footage_read_is_logged_first(log_server: RunningServer, log_admin: Api, clock: FakeClock) -> None:
    device = await log_admin.enroll(clock)
    rec = await record(device, 2)
    supervisor = await log_admin.user("sup", "supervisor")
    chunk_seq = rec.seqs[1]
    reads = 0
    for route in ROUTES:
        if not route.footage:
            continue
        before = await log_admin.ok("GET", "/api/v1/access-log?limit=1000")
        path = concrete(route, device.device_id, chunk_seq, rec.recording_id)
        # (a) without a reason: refused, nothing served, nothing logged
        if route.method == "GET":
            refused = await supervisor.call("GET", path)
        else:
            refused = await supervisor.call("POST", path, {"recordings": f"{device.device_id}/{rec.recording_id}",
                                                           "reason": ""})
        assert refused.status == 400 and refused.code in ("reason_required", "out_of_range"), refused.body
        assert await log_admin.ok("GET", "/api/v1/access-log?limit=1000") == before
        # (b) with a reason: served, and logged (with its leaf in the transparency log)
        if route.method == "GET":
            reply = await supervisor.call("GET", path + "?reason=checking+the+complaint")
        else:
            reply = await supervisor.call("POST", path, {"recordings": f"{device.device_id}/{rec.recording_id}",
                                                         "reason": "checking the complaint"})
        assert reply.status == 200, reply.body
        assert reply.headers["Content-Type"].split(";")[0] in FOOTAGE_TYPES
        after = (await log_admin.ok("GET", "/api/v1/access-log?limit=1000"))["events"]
        new = after[len(before["events"]):]
        assert len(new) == 1, (route.path, new)
        event = new[0]
        assert str(event["id"]) == reply.headers["Custody-Access-Id"]
        assert event["actor"] == "user:sup" and event["reason"] == "checking the complaint"
        assert event["device_id"] == device.device_id and event["log_index"] is not None
        leaf = (await log_admin.call("GET", f"/api/v1/log/leaves?start={event['log_index']}"
                                            f"&end={event['log_index'] + 1}", token=None)).json["leaves"][0]
        assert leaf["kind"] == "access"
        if route.response == "application/zip":
            assert "case/access-log.json" in zipfile.ZipFile(io.BytesIO(reply.body)).namelist()
        reads += 1
    assert reads == len(FOOTAGE_ROUTES)
    # supervisors and auditors query by user, device, kind and time
    by_user = await log_admin.ok("GET", "/api/v1/access-log?actor=user:sup")
    assert len(by_user["events"]) == reads
    by_device = await log_admin.ok("GET", f"/api/v1/access-log?device_id={device.device_id}&kind=download")
    assert {e["kind"] for e in by_device["events"]} == {"download"}
    later = await log_admin.ok("GET", f"/api/v1/access-log?from_ms={clock.now_ms() + 1}")
    assert later["events"] == []


async def test_no_other_route_serves_footage(log_server: RunningServer, log_admin: Api, clock: FakeClock) -> None:
    device = await log_admin.enroll(clock)
    rec = await record(device, 1)
    for route in ROUTES:
        people_only_admin_excluded = isinstance(route.access, frozenset) and "admin" not in {
            r.value for r in route.access}
        if route.method != "GET" or route.footage or people_only_admin_excluded:
            continue
        path = concrete(route, device.device_id, rec.seqs[1], rec.recording_id).replace("{name}", "admin")
        if "{" in path:
            continue
        query = {"/api/v1/log/proof/inclusion": "?index=0&size=1", "/api/v1/log/proof/consistency": "?from=1&to=1"}
        reply = await log_admin.call("GET", path + query.get(route.path, ""))
        assert reply.headers.get("Content-Type", "").split(";")[0] not in FOOTAGE_TYPES, route.path
