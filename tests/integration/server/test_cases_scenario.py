"""The scripted scenario of the case audit: 3 officers, 5 cases, 20 steps, real recordings from
simulated devices, a day of enforcement run on a fake clock in seconds, with seeded omissions:

- a hearing that was never recorded (C1 c1-hearing: step.missing_footage);
- a ``full`` compulsion step whose two recordings leave 40 s uncovered (C2 c2-seize:
  step.incomplete_coverage);
- a chunk announced and never uploaded by a device that then went silent (C4 c4-inspect:
  step.unverified_footage, chunk.pending_upload, device.offline_with_pending);
- recording by an officer whose certificate had expired (C3 c3-random: officer.certificate_expired);
- an orphan recording linked to no step (recording.unlinked);
- and a legal reviewer who signs off C1's decision over the missing hearing (review.override).

The audit's JSON is compared exactly with ``cases_scenario_audit.json`` on SQLite and on
PostgreSQL: device keys are derived from fixed seeds and the clock is fake, so every byte is
reproducible. Set ``CUSTODY_REGOLD=1`` to rewrite the golden files after a deliberate change.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from custody.clock import FakeClock
from protocol.keys import SigningKey
from server.app import RunningServer, start_server
from tests.helpers.device import SimDevice
from tests.helpers.media import make_chunk
from tests.integration.server.conftest import Api, server_config

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
GOLDEN_JSON = HERE / "cases_scenario_audit.json"
GOLDEN_ZH = HERE / "cases_scenario_audit.zh.txt"
GOLDEN_EN = HERE / "cases_scenario_audit.en.txt"

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, FakeClock's default start
CHUNK_S = 10


def at(h: int, m: int = 0, s: int = 0) -> int:
    """The scenario day's time h:m:s UTC, in ms."""
    return T0 + ((h * 60 + m) * 60 + s) * 1000


def chunk() -> Any:
    """One real 10 s MP4 chunk (H.264 + AAC), tiny so the day runs in seconds."""
    return make_chunk(seconds=float(CHUNK_S), fps=2, width=64, height=48)


@dataclass
class World:
    """The running server and the people and devices of the scenario."""

    server: RunningServer
    clock: FakeClock
    admin: Api
    handler: Api
    reviewer: Api
    auditor: Api
    devices: dict[str, SimDevice]

    def goto(self, ms: int) -> None:
        """Move the fake clock forward to ``ms``."""
        assert ms >= self.clock.now_ms(), (ms, self.clock.now_ms())
        self.clock.advance((ms - self.clock.now_ms()) / 1000)

    async def record(self, device: str, recording_id: str, start_ms: int, chunks: int, *,
                     step: str | None = None, never_upload: tuple[int, ...] = ()) -> None:
        """A recording of ``chunks`` 10 s chunks from ``start_ms``: start event, chunks, stop event."""
        dev = self.devices[device]
        self.goto(start_ms)
        dev.recording_id, dev.index, dev.case_step = recording_id, 0, step
        assert (await dev.announce(dev.event("start"))).status == 201
        for i in range(chunks):
            c = chunk()
            env = dev.manifest(c)
            announced = await dev.announce(env)
            assert announced.status == 201, announced.body
            if i not in never_upload:
                assert (await dev.put(announced.json["upload"], c.data)).status in (200, 201)
                verified = await dev.verify(dev.seq - 1)
                assert verified.status == 200, verified.body
            self.clock.advance(CHUNK_S)
        assert (await dev.announce(dev.event("stop"))).status == 201


@pytest.fixture(params=["sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    """A server on a fixed fake clock (SQLite, or PostgreSQL), its users, three enrolled devices."""
    clock = FakeClock()  # fixed start: the golden files depend on every time in the day
    kw: dict[str, Any] = {}
    if request.param == "postgres":
        kw["database_url"] = request.getfixturevalue("postgres_db").async_url
    srv = await start_server(server_config(tmp_path / "data", **kw), clock)
    async with aiohttp.ClientSession() as session:
        admin = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
        world = World(srv, clock, admin, await admin.user("chen", "case_handler"),
                      await admin.user("liu", "legal_reviewer"), await admin.user("zhou", "auditor"), {})
        for n, name in enumerate(("A", "B", "C"), start=1):
            token = (await admin.ok("POST", "/api/v1/enrollment-tokens", {}))["token"]
            dev = SimDevice(srv.url, session, clock, key=SigningKey.from_private_bytes(bytes([n]) * 32))
            await dev.enroll(token)
            world.devices[name] = dev
        try:
            yield world
        finally:
            await srv.stop()


OFFICERS = (("o-zhang", "张伟", "A", at(23, 59)), ("o-li", "李娜", "B", at(23, 59)),
            # 王强's certificate expires at 13:00: what he records after that is a finding.
            ("o-wang", "王强", "C", at(13)))

CASES: list[dict[str, Any]] = [
    {"number": "平工信罚〔2026〕1号", "category": "penalty", "title": "无证经营民用爆炸物品", "major": True,
     "parties": ["某化工有限公司"]},
    {"number": "平工信强〔2026〕2号", "category": "compulsion", "title": "查封违规储存的爆炸物品",
     "parties": ["某矿业有限公司"]},
    {"number": "平工信检〔2026〕3号", "category": "inspection", "title": "年度双随机抽查", "parties": ["某爆破公司"]},
    {"number": "平工信许〔2026〕4号", "category": "licensing", "title": "民用爆炸物品销售许可",
     "parties": ["某贸易公司"]},
    {"number": "平工信征〔2026〕5号", "category": "levy", "title": "征收厂区用地", "parties": ["某村委会"]},
]

# (case index, step id, stage, activity, officers, planned window); 5 + 4 + 4 + 4 + 3 = 20 steps.
STEPS: list[tuple[int, str, str, str, list[str], tuple[int, int]]] = [
    (0, "c1-filing", "filing", "other", ["o-zhang"], (at(8), at(8, 10))),
    (0, "c1-inspect", "investigation", "on_site_inspection", ["o-zhang"], (at(8, 30), at(8, 30, 30))),
    (0, "c1-evidence", "evidence_collection", "investigation_evidence", ["o-zhang", "o-li"], (at(9), at(9, 0, 30))),
    (0, "c1-hearing", "review", "hearing", ["o-zhang", "o-li"], (at(10), at(10, 30))),
    (0, "c1-decision", "decision", "other", ["o-zhang"], (at(17, 30), at(17, 40))),
    (1, "c2-filing", "filing", "other", ["o-zhang"], (at(10, 50), at(10, 55))),
    (1, "c2-inspect", "investigation", "on_site_inspection", ["o-zhang"], (at(11), at(11, 1))),
    (1, "c2-seize", "execution", "administrative_compulsion", ["o-zhang", "o-li"], (at(11, 10), at(11, 12))),
    (1, "c2-service", "service", "service_of_documents", ["o-li"], (at(11, 30), at(11, 30, 20))),
    (2, "c3-inspect", "investigation", "on_site_inspection", ["o-wang"], (at(12), at(12, 0, 30))),
    (2, "c3-service", "service", "service_of_documents", ["o-wang"], (at(12, 30), at(12, 30, 20))),
    (2, "c3-random", "investigation", "random_inspection", ["o-wang"], (at(13, 30), at(13, 30, 30))),
    (2, "c3-decision", "decision", "other", ["o-wang"], (at(14), at(14, 10))),
    (3, "c4-filing", "filing", "other", ["o-li"], (at(14, 30), at(14, 40))),
    (3, "c4-inspect", "investigation", "on_site_inspection", ["o-li"], (at(15), at(15, 0, 30))),
    (3, "c4-review", "review", "other", ["o-li"], (at(20), at(20, 30))),
    (3, "c4-decision", "decision", "other", ["o-li"], (at(21), at(21, 30))),
    (4, "c5-filing", "filing", "other", ["o-zhang"], (at(15, 50), at(15, 55))),
    (4, "c5-preserve", "evidence_collection", "evidence_preservation", ["o-zhang"], (at(16, 5), at(16, 5, 20))),
    (4, "c5-service", "service", "service_of_documents", ["o-zhang"], (at(16, 5, 20), at(16, 5, 40))),
]

#: Steps that happened (completed with their planned window as the actual one); the rest stay planned.
DONE = [s[1] for s in STEPS if s[1] not in ("c1-decision", "c4-review", "c4-decision")]


async def run_day(w: World) -> dict[str, int]:
    """The day, 07:00 to 18:00; returns the case ids by step prefix."""
    admin, handler = w.admin, w.handler
    w.goto(at(7))
    for officer_id, name, device, expires in OFFICERS:
        await admin.ok("POST", "/api/v1/officers", {"id": officer_id, "name": name, "unit": "平顶山市工业和信息化局",
                                                    "cert_number": "豫" + officer_id[2:].upper(),
                                                    "cert_expires_ms": expires})
        dev = w.devices[device]
        await admin.ok("POST", f"/api/v1/devices/{dev.device_id}/assignments", {"officer_id": officer_id})
        dev.officer_id = officer_id
    ids = [(await handler.ok("POST", "/api/v1/cases", c, 201))["id"] for c in CASES]
    for case, step_id, stage, activity, officers, (start, end) in STEPS:
        step = await handler.ok("POST", f"/api/v1/cases/{ids[case]}/steps", {
            "id": step_id, "stage": stage, "activity": activity, "officers": officers, "planned_start_ms": start,
            "planned_end_ms": end, "location": "平顶山市"}, 201)
        assert step["policy_version"] == "2026.1-default"

    # C1: the inspection is recorded with the step selected on the device; the evidence collection
    # without it (linked by hand from the suggestions); the hearing is not recorded at all.
    await w.record("A", "rec-c1-inspect", at(8, 30), 3, step="c1-inspect")
    await w.record("B", "rec-c1-evidence", at(9), 3)
    # C2: on-site inspection fully recorded; the seizure (full) in two recordings 40 s apart.
    await w.record("A", "rec-c2-inspect", at(11), 6, step="c2-inspect")
    await w.record("B", "rec-c2-seize-1", at(11, 10), 4, step="c2-seize")
    await w.record("B", "rec-c2-seize-2", at(11, 11, 20), 4, step="c2-seize")
    await w.record("B", "rec-c2-service", at(11, 30), 2, step="c2-service")
    # C3: the random inspection at 13:30 is after 王强's certificate expired at 13:00.
    await w.record("C", "rec-c3-inspect", at(12), 3, step="c3-inspect")
    await w.record("C", "rec-c3-service", at(12, 30), 2, step="c3-service")
    await w.record("C", "rec-c3-random", at(13, 30), 3, step="c3-random")
    # C4: the third chunk of the inspection never reaches the server; device B is not heard of again.
    await w.record("B", "rec-c4-inspect", at(15), 3, step="c4-inspect", never_upload=(2,))
    # C5: one recording covers preservation and service; the handler links each half by time range.
    await w.record("A", "rec-c5", at(16, 5), 4)
    # An orphan: 张伟 records at 17:00, outside every step.
    await w.record("A", "rec-orphan", at(17), 2)

    c1 = ids[0]
    suggestions = (await handler.ok("GET", f"/api/v1/cases/{c1}/steps/c1-evidence/suggestions"))["suggestions"]
    b = w.devices["B"].device_id
    assert [(s["device_id"], s["recording_id"], s["overlap_ms"]) for s in suggestions] == [
        (b, "rec-c1-evidence", 30_000)]
    await handler.ok("POST", f"/api/v1/cases/{c1}/steps/c1-evidence/links", {
        "device_id": b, "recording_id": "rec-c1-evidence", "reason": "李娜's body camera during the questioning"}, 201)
    a = w.devices["A"].device_id
    await handler.ok("POST", f"/api/v1/cases/{ids[4]}/steps/c5-preserve/links", {
        "device_id": a, "recording_id": "rec-c5", "from_ms": at(16, 5), "until_ms": at(16, 5, 20),
        "reason": "先行登记保存 of the account books"}, 201)
    await handler.ok("POST", f"/api/v1/cases/{ids[4]}/steps/c5-service/links", {
        "device_id": a, "recording_id": "rec-c5", "from_ms": at(16, 5, 20), "until_ms": at(16, 5, 40),
        "reason": "the notice handed over"}, 201)

    for case, step_id, *_rest, (start, end) in STEPS:
        if step_id in DONE:
            await handler.ok("PATCH", f"/api/v1/cases/{ids[case]}/steps/{step_id}", {
                "status": "completed", "actual_start_ms": start, "actual_end_ms": end})
    return {"c1": c1, "c2": ids[1], "c3": ids[2], "c4": ids[3], "c5": ids[4]}


async def legal_review(w: World, c1: int) -> None:
    """C1 is major: its decision cannot complete unsigned, and the sign-off sees the missing hearing."""
    w.goto(at(17, 30))
    await w.handler.ok("PATCH", f"/api/v1/cases/{c1}/steps/c1-decision", {"status": "in_progress"})
    unsigned = await w.handler.call("PATCH", f"/api/v1/cases/{c1}/steps/c1-decision", {"status": "completed"})
    assert (unsigned.status, unsigned.code) == (409, "legal_review_required"), unsigned.body
    refused = await w.reviewer.call("POST", f"/api/v1/cases/{c1}/steps/c1-decision/signoff",
                                    {"opinion": "事实清楚，证据确凿"})
    assert (refused.status, refused.code) == (409, "footage_incomplete"), refused.body
    assert refused.json["findings"] == [{"code": "step.missing_footage", "subject": "平工信罚〔2026〕1号 / c1-hearing"}]
    w.goto(at(17, 35))
    signed = await w.reviewer.ok("POST", f"/api/v1/cases/{c1}/steps/c1-decision/signoff", {
        "opinion": "事实清楚，证据确凿", "override_reason": "听证笔录经双方签字确认，记录仪故障有书面说明"}, 201)
    assert signed["override_reason"] and signed["blocking"][0]["code"] == "step.missing_footage"
    done = await w.handler.ok("PATCH", f"/api/v1/cases/{c1}/steps/c1-decision", {"status": "completed"})
    assert done["status"] == "completed"


def _golden(path: Path, actual: str) -> str:
    if os.environ.get("CUSTODY_REGOLD"):
        path.write_text(actual, encoding="utf-8")
    return path.read_text(encoding="utf-8")


async def test_scenario_audit_is_exact(world: World) -> None:
    w = world
    ids = await run_day(w)
    await legal_review(w, ids["c1"])
    w.goto(at(18))
    report = await w.auditor.ok("GET", "/api/v1/audit")
    actual = json.dumps(report, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    assert actual == _golden(GOLDEN_JSON, actual)

    # The omissions, by code (a readable summary of what the golden file holds).
    assert report["summary"]["by_code"] == {
        "chunk.pending_upload": 1, "device.offline_with_pending": 1, "officer.certificate_expired": 1,
        "recording.unlinked": 1, "review.override": 1, "step.incomplete_coverage": 1, "step.missing_footage": 1,
        "step.unverified_footage": 1}
    gap = next(f for f in report["findings"] if f["code"] == "step.incomplete_coverage")["evidence"]
    assert gap["gaps"] == [{"from_ms": at(11, 10, 40), "until_ms": at(11, 11, 20), "ms": 40_000}]

    # The same audit as text, in Chinese and English, through the API.
    zh = await w.auditor.call("GET", "/api/v1/audit?format=text&lang=zh")
    assert zh.headers["Content-Type"].startswith("text/plain")
    assert zh.body.decode() == _golden(GOLDEN_ZH, zh.body.decode())
    en = await w.auditor.call("GET", "/api/v1/audit?format=text&lang=en")
    assert en.body.decode() == _golden(GOLDEN_EN, en.body.decode())

    # Filters: one case; one officer; one device; a time range.
    c2 = await w.auditor.ok("GET", f"/api/v1/audit?case_id={ids['c2']}")
    assert [f["code"] for f in c2["findings"]] == ["step.incomplete_coverage"]
    wang = await w.auditor.ok("GET", "/api/v1/audit?officer_id=o-wang")
    assert [f["code"] for f in wang["findings"]] == ["officer.certificate_expired"]
    b = w.devices["B"].device_id
    dev_b = await w.auditor.ok("GET", f"/api/v1/audit?device_id={b}")
    assert sorted(f["code"] for f in dev_b["findings"]) == [
        "chunk.pending_upload", "device.offline_with_pending", "step.incomplete_coverage", "step.unverified_footage"]
    morning = await w.auditor.ok("GET", f"/api/v1/audit?since={at(8)}&until={at(10, 45)}")
    assert [f["code"] for f in morning["findings"]] == ["step.missing_footage"]

    # Every link change is an event: C5's two manual links, C2's auto links made from the manifests.
    events = (await w.auditor.ok("GET", f"/api/v1/cases/{ids['c5']}/events"))["events"]
    assert [(e["action"], e["step_id"], e["source"], e["actor"]) for e in events] == [
        ("link", "c5-preserve", "manual", "user:chen"), ("link", "c5-service", "manual", "user:chen")]
    c2_events = (await w.auditor.ok("GET", f"/api/v1/cases/{ids['c2']}/events"))["events"]
    assert sorted((e["recording_id"], e["source"]) for e in c2_events) == [
        ("rec-c2-inspect", "auto"), ("rec-c2-seize-1", "auto"), ("rec-c2-seize-2", "auto"),
        ("rec-c2-service", "auto")]

    if not w.server.services.db.is_sqlite:
        return
    # The CLI renders the same report from the API's JSON.
    token = w.auditor.token
    assert token is not None
    cli = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "custody", "audit", "--server", w.server.url, "--token", token,
                         "--format", "text", "--lang", "en"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == en.body.decode()
    admin_token = w.admin.token
    assert admin_token is not None
    added = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "custody", "case", "--server", w.server.url, "--token", admin_token,
                         "--json", "add", "平工信收〔2026〕6号", "--category", "fees", "--title", "收费检查",
                         "--handler", "chen", "--party", "某公司"], capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["handler"] == "chen"
