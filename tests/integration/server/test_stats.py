"""Statistics per unit, officer, device and month, through the API (JSON and CSV) and the public summary."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from custody.clock import FakeClock
from server.app import RunningServer
from tests.integration.server.conftest import Api

pytestmark = pytest.mark.integration

DAY = 86_400_000


async def test_monthly_stats_and_public_summary(server: RunningServer, admin: Api, clock: FakeClock,
                                                admin_token: str, tmp_path: Path) -> None:
    for uid, kind, parent in (("east", "bureau", None), ("east-a", "section", "east"), ("west", "bureau", None)):
        await admin.ok("POST", "/api/v1/units", {"id": uid, "name": uid.title(), "kind": kind, "parent_id": parent})
    await admin.ok("POST", "/api/v1/officers", {"id": "off-e", "name": "Officer E", "unit": "East A",
                                                "cert_number": "C-E", "cert_expires_ms": clock.now_ms() + 365 * DAY})
    await admin.ok("POST", "/api/v1/placements", {"kind": "officer", "id": "off-e", "unit_id": "east-a"})
    east, west = await admin.enroll(clock), await admin.enroll(clock)
    await admin.ok("POST", "/api/v1/placements", {"kind": "device", "id": east.device_id, "unit_id": "east-a"})
    await admin.ok("POST", "/api/v1/placements", {"kind": "device", "id": west.device_id, "unit_id": "west"})
    east.officer_id = "off-e"
    for dev, chunks in ((east, 2), (west, 1)):
        await dev.announce(dev.event("start"))
        for _ in range(chunks):
            await dev.deliver()
        await dev.announce(dev.event("stop"))
    handler = await admin.user("st-handler", "case_handler")
    await admin.ok("POST", "/api/v1/placements", {"kind": "user", "id": "st-handler", "unit_id": "east-a"})
    case = (await handler.ok("POST", "/api/v1/cases", {"number": "S-1", "category": "inspection", "title": "t"}))
    for step in ("s-1", "s-2"):
        await handler.ok("POST", f"/api/v1/cases/{case['id']}/steps", {
            "id": step, "stage": "investigation", "activity": "on_site_inspection", "officers": ["off-e"]})
    await handler.ok("POST", f"/api/v1/cases/{case['id']}/steps/s-1/links", {
        "device_id": east.device_id, "recording_id": east.recording_id, "reason": "r"})
    month = __import__("server.services.stats", fromlist=["month_of"]).month_of(clock.now_ms())

    rows = {r["key"]: r for r in (await admin.ok("GET", "/api/v1/stats?dimension=unit"))["rows"]}
    a = rows["east-a"]
    assert (a["month"], a["recordings"], a["steps_required"], a["steps_covered"], a["covered_share"]) == (
        month, 1, 2, 1, 0.5)
    assert a["hours"] > 0 and a["upload_delay_ms"]["count"] == 2 and a["upload_delay_ms"]["p50"] is not None
    assert rows["west"]["recordings"] == 1 and rows["west"]["steps_required"] == 0
    devices = {r["key"]: r for r in (await admin.ok("GET", "/api/v1/stats?dimension=device"))["rows"]}
    assert devices[east.device_id]["uptime_share"] > 0
    officers = {r["key"]: r for r in (await admin.ok("GET", "/api/v1/stats?dimension=officer"))["rows"]}
    assert officers["off-e"]["recordings"] == 1 and officers["off-e"]["steps_required"] == 2

    # A scoped user sees their units' rows only.
    scoped = {r["key"] for r in (await handler.ok("GET", "/api/v1/stats?dimension=unit"))["rows"]}
    assert scoped == {"east-a"}
    reply = await admin.call("GET", "/api/v1/stats?dimension=unit&format=csv")
    assert reply.headers["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(reply.body.decode())))
    assert {r["key"] for r in table} == set(rows) and table[0]["dimension"] == "unit"

    summary = await admin.ok("GET", f"/api/v1/stats/public/{month[:4]}")
    assert summary["agency"]["recordings"] == 2 and summary["agency"]["steps_required"] == 2
    text = json.dumps(summary, ensure_ascii=False)
    for personal in ("off-e", "Officer E", east.device_id, west.device_id, "S-1", "st-handler"):
        assert personal not in text

    # custody stats: the same rows as CSV, and the public summary written to a file ready to publish.
    out = tmp_path / "summary.json"
    base = [sys.executable, "-m", "custody", "stats", "--server", server.url, "--token", admin_token]
    got = await asyncio.to_thread(subprocess.run, base, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert {r["key"] for r in csv.DictReader(io.StringIO(got.stdout))} == set(rows)
    got = await asyncio.to_thread(subprocess.run, [*base, "--format", "json"], capture_output=True, text=True,
                                  timeout=60)
    assert got.returncode == 0, got.stderr
    as_json = json.loads(got.stdout)
    assert {r["key"] for r in as_json["rows"]} == set(rows) and as_json["totals"]
    got = await asyncio.to_thread(subprocess.run, [*base, "--public-summary", month[:4], "--out", str(out)],
                                  capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert json.loads(out.read_text(encoding="utf-8"))["agency"] == summary["agency"]
