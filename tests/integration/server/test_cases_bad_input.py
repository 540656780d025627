"""Bad input to every case, link, review, audit and policy endpoint: each gets its specific 4xx
problem document with a code, and nothing in the case tables (or the findings) changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from custody.clock import FakeClock
from server.app import RunningServer, start_server
from server.db import schema
from tests.helpers.device import Reply, SimDevice
from tests.helpers.media import make_chunk
from tests.integration.server.conftest import Api, server_config

pytestmark = pytest.mark.integration

TABLES = (schema.cases, schema.case_steps, schema.step_links, schema.link_events, schema.review_signoffs,
          schema.recording_policies, schema.findings)


@dataclass
class W:
    """A server with two handlers' cases, a recording, links, and users of several roles."""

    server: RunningServer
    admin: Api
    chen: Api  # case handler of case c1
    wu: Api  # case handler of case c2
    reviewer: Api
    officer: Api
    supervisor: Api
    device: SimDevice
    c1: int
    c2: int
    rec_start: int
    rec_end: int
    removed_link: int
    s1_link: int
    policy_text: str


@pytest.fixture
async def w(tmp_path: Path) -> AsyncIterator[W]:
    clock = FakeClock()
    srv = await start_server(server_config(tmp_path / "data"), clock)
    async with aiohttp.ClientSession() as session:
        admin = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
        chen, wu = await admin.user("chen", "case_handler"), await admin.user("wu", "case_handler")
        await admin.ok("POST", "/api/v1/officers", {"id": "o-1", "name": "N", "unit": "U", "cert_number": "C-1",
                                                    "cert_expires_ms": clock.now_ms() + 86_400_000})
        device = await admin.enroll(clock)
        await admin.ok("POST", f"/api/v1/devices/{device.device_id}/assignments", {"officer_id": "o-1"})
        device.officer_id, device.recording_id = "o-1", "rec-1"
        start = clock.now_ms()
        await device.announce(device.event("start"))
        for _ in range(3):
            await device.deliver(make_chunk())
            clock.advance(1)
        await device.announce(device.event("stop"))
        end = clock.now_ms()
        c1 = (await chen.ok("POST", "/api/v1/cases", {"number": "C-1", "category": "penalty", "title": "t",
                                                      "major": True}))["id"]
        c2 = (await wu.ok("POST", "/api/v1/cases", {"number": "C-2", "category": "inspection", "title": "t"}))["id"]
        for case, api, step, stage, activity in ((c1, chen, "s1", "investigation", "on_site_inspection"),
                                                 (c1, chen, "s2", "evidence_collection", "investigation_evidence"),
                                                 (c1, chen, "s-miss", "review", "hearing"),
                                                 (c1, chen, "s-dec", "decision", "other"),
                                                 (c2, wu, "t1", "investigation", "random_inspection")):
            await api.ok("POST", f"/api/v1/cases/{case}/steps", {"id": step, "stage": stage, "activity": activity,
                                                                   "officers": ["o-1"]})
        await chen.ok("PATCH", f"/api/v1/cases/{c1}/steps/s-miss", {"status": "completed"})
        await chen.ok("PATCH", f"/api/v1/cases/{c1}/steps/s-dec", {"status": "in_progress"})
        dev = device.device_id
        first = await chen.ok("POST", f"/api/v1/cases/{c1}/steps/s2/links", {
            "device_id": dev, "recording_id": "rec-1", "from_ms": start, "until_ms": start + 1000, "reason": "r"})
        await chen.ok("POST", f"/api/v1/cases/{c1}/steps/s2/links/{first['id']}/unlink", {"reason": "wrong step"})
        s1_link = await chen.ok("POST", f"/api/v1/cases/{c1}/steps/s1/links", {
            "device_id": dev, "recording_id": "rec-1", "from_ms": start, "until_ms": start + 2000, "reason": "r"})
        text = (await admin.ok("GET", "/api/v1/policy"))["text"]
        try:
            yield W(srv, admin, chen, wu, await admin.user("liu", "legal_reviewer"), await admin.user("ma", "officer"),
                    await admin.user("sun", "supervisor"), device, c1, c2, start, end, first["id"], s1_link["id"],
                    text)
        finally:
            await srv.stop()


Call = Callable[[W], Awaitable[Reply]]


def link(w: W, case: int, step: str, **body: Any) -> Awaitable[Reply]:
    """POST a link with defaults for the fields a case does not set."""
    full = {"device_id": w.device.device_id, "recording_id": "rec-1", "reason": "r", **body}
    return w.chen.call("POST", f"/api/v1/cases/{case}/steps/{step}/links", {k: v for k, v in full.items()
                                                                             if v is not None})


CASES: dict[str, tuple[Call, int, str]] = {
    # unknown case, step outside its case, unknown step, bad ids in paths
    "case_unknown": (lambda w: w.chen.call("GET", "/api/v1/cases/999"), 404, "unknown_case"),
    "case_patch_unknown": (lambda w: w.chen.call("PATCH", "/api/v1/cases/999", {"title": "x"}), 404, "unknown_case"),
    "step_add_to_unknown_case": (lambda w: w.chen.call("POST", "/api/v1/cases/999/steps", {
        "id": "x", "stage": "filing", "activity": "other"}), 404, "unknown_case"),
    "step_outside_its_case": (lambda w: w.chen.call("GET", f"/api/v1/cases/{w.c1}/steps/t1"), 404,
                              "step_not_in_case"),
    "step_patch_outside_its_case": (lambda w: w.chen.call("PATCH", f"/api/v1/cases/{w.c1}/steps/t1",
                                                          {"location": "x"}), 404, "step_not_in_case"),
    "link_step_outside_its_case": (lambda w: link(w, w.c1, "t1"), 404, "step_not_in_case"),
    "suggest_step_outside_its_case": (lambda w: w.chen.call("GET", f"/api/v1/cases/{w.c1}/steps/t1/suggestions"),
                                      404, "step_not_in_case"),
    "signoff_step_outside_its_case": (lambda w: w.reviewer.call("POST", f"/api/v1/cases/{w.c2}/steps/s-dec/signoff",
                                                                {"opinion": "o"}), 404, "step_not_in_case"),
    "step_unknown": (lambda w: w.chen.call("GET", f"/api/v1/cases/{w.c1}/steps/nope"), 404, "unknown_step"),
    "step_id_not_an_identifier": (lambda w: w.chen.call("GET", f"/api/v1/cases/{w.c1}/steps/a%20b"), 400, "bad_id"),
    "case_id_not_a_number": (lambda w: w.chen.call("GET", "/api/v1/cases/abc"), 400, "bad_id"),
    "events_unknown_case": (lambda w: w.chen.call("GET", "/api/v1/cases/999/events"), 404, "unknown_case"),
    # cases
    "case_unknown_category": (lambda w: w.chen.call("POST", "/api/v1/cases", {
        "number": "N-1", "category": "tax", "title": "t"}), 400, "bad_value"),
    "case_number_exists": (lambda w: w.chen.call("POST", "/api/v1/cases", {
        "number": "C-1", "category": "penalty", "title": "t"}), 409, "case_exists"),
    "case_unknown_field": (lambda w: w.chen.call("POST", "/api/v1/cases", {
        "number": "N-2", "category": "penalty", "title": "t", "priority": 1}), 400, "unknown_field"),
    "case_parties_not_a_list": (lambda w: w.chen.call("POST", "/api/v1/cases", {
        "number": "N-3", "category": "penalty", "title": "t", "parties": "某公司"}), 400, "wrong_type"),
    "case_handler_unknown": (lambda w: w.admin.call("POST", "/api/v1/cases", {
        "number": "N-4", "category": "penalty", "title": "t", "handler": "ghost"}), 422, "unknown_handler"),
    "case_handler_not_a_handler": (lambda w: w.admin.call("POST", "/api/v1/cases", {
        "number": "N-5", "category": "penalty", "title": "t", "handler": "ma"}), 422, "unknown_handler"),
    "case_for_another_handler": (lambda w: w.chen.call("POST", "/api/v1/cases", {
        "number": "N-6", "category": "penalty", "title": "t", "handler": "wu"}), 403, "not_case_handler"),
    "case_admin_without_handler": (lambda w: w.admin.call("POST", "/api/v1/cases", {
        "number": "N-7", "category": "penalty", "title": "t"}), 400, "missing_field"),
    "case_of_another_handler_patched": (lambda w: w.chen.call("PATCH", f"/api/v1/cases/{w.c2}", {"title": "x"}),
                                        403, "not_case_handler"),
    "case_patch_nothing": (lambda w: w.chen.call("PATCH", f"/api/v1/cases/{w.c1}", {}), 400, "missing_field"),
    "case_by_officer": (lambda w: w.officer.call("POST", "/api/v1/cases", {
        "number": "N-8", "category": "penalty", "title": "t"}), 403, "forbidden_role"),
    # steps
    "step_id_exists": (lambda w: w.chen.call("POST", f"/api/v1/cases/{w.c1}/steps", {
        "id": "t1", "stage": "filing", "activity": "other"}), 409, "step_exists"),
    "step_unknown_activity": (lambda w: w.chen.call("POST", f"/api/v1/cases/{w.c1}/steps", {
        "id": "x1", "stage": "filing", "activity": "picnic"}), 400, "bad_value"),
    "step_planned_window_reversed": (lambda w: w.chen.call("POST", f"/api/v1/cases/{w.c1}/steps", {
        "id": "x2", "stage": "filing", "activity": "other", "planned_start_ms": w.rec_end,
        "planned_end_ms": w.rec_start}), 422, "bad_window"),
    "step_planned_window_half": (lambda w: w.chen.call("POST", f"/api/v1/cases/{w.c1}/steps", {
        "id": "x3", "stage": "filing", "activity": "other", "planned_start_ms": w.rec_start}), 422, "bad_window"),
    "step_unknown_officer": (lambda w: w.chen.call("POST", f"/api/v1/cases/{w.c1}/steps", {
        "id": "x4", "stage": "filing", "activity": "other", "officers": ["o-1", "o-ghost"]}), 422,
        "unknown_officer"),
    "step_officer_twice": (lambda w: w.chen.call("POST", f"/api/v1/cases/{w.c1}/steps", {
        "id": "x5", "stage": "filing", "activity": "other", "officers": ["o-1", "o-1"]}), 400, "bad_value"),
    "step_in_another_handlers_case": (lambda w: w.chen.call("POST", f"/api/v1/cases/{w.c2}/steps", {
        "id": "x6", "stage": "filing", "activity": "other"}), 403, "not_case_handler"),
    "step_status_backwards": (lambda w: w.chen.call("PATCH", f"/api/v1/cases/{w.c1}/steps/s-miss",
                                                    {"status": "planned"}), 409, "illegal_status_change"),
    "major_decision_completed_unsigned": (lambda w: w.chen.call("PATCH", f"/api/v1/cases/{w.c1}/steps/s-dec",
                                                                {"status": "completed"}), 409,
                                          "legal_review_required"),
    # links
    "link_unknown_recording": (lambda w: link(w, w.c1, "s1", recording_id="rec-none"), 404, "unknown_recording"),
    "link_range_outside_recording": (lambda w: link(w, w.c1, "s1", from_ms=w.rec_start - 60_000,
                                                    until_ms=w.rec_start + 1000), 422, "range_outside_recording"),
    "link_range_after_recording": (lambda w: link(w, w.c1, "s1", from_ms=w.rec_end + 1000,
                                                  until_ms=w.rec_end + 5000), 422, "range_outside_recording"),
    "link_half_range": (lambda w: link(w, w.c1, "s1", from_ms=w.rec_start), 400, "missing_field"),
    "link_range_reversed": (lambda w: link(w, w.c1, "s1", from_ms=w.rec_start + 2000, until_ms=w.rec_start), 422,
                            "bad_window"),
    "link_overlapping_contradictory": (lambda w: link(w, w.c1, "s2", from_ms=w.rec_start + 1000,
                                                      until_ms=w.rec_start + 3000), 409, "link_overlap"),
    "link_whole_recording_contradicts_range": (lambda w: link(w, w.c1, "s2"), 409, "link_overlap"),
    "link_twice": (lambda w: link(w, w.c1, "s1", from_ms=w.rec_start + 500, until_ms=w.rec_start + 1500), 409,
                   "link_exists"),
    "link_without_reason": (lambda w: w.chen.call("POST", f"/api/v1/cases/{w.c1}/steps/s1/links", {
        "device_id": w.device.device_id, "recording_id": "rec-1"}), 400, "missing_field"),
    "link_bad_device_id": (lambda w: link(w, w.c1, "s1", device_id="NOT-A-DEVICE"), 400, "bad_value"),
    "link_by_another_handler": (lambda w: w.wu.call("POST", f"/api/v1/cases/{w.c1}/steps/s1/links", {
        "device_id": w.device.device_id, "recording_id": "rec-1", "reason": "r"}), 403, "not_case_handler"),
    "link_by_supervisor": (lambda w: w.supervisor.call("POST", f"/api/v1/cases/{w.c1}/steps/s1/links", {
        "device_id": w.device.device_id, "recording_id": "rec-1", "reason": "r"}), 403, "forbidden_role"),
    "unlink_unknown": (lambda w: w.chen.call("POST", f"/api/v1/cases/{w.c1}/steps/s1/links/999/unlink",
                                             {"reason": "r"}), 404, "unknown_link"),
    "unlink_via_another_step": (lambda w: w.chen.call(
        "POST", f"/api/v1/cases/{w.c1}/steps/s2/links/{w.s1_link}/unlink", {"reason": "r"}), 404, "unknown_link"),
    "unlink_twice": (lambda w: w.chen.call("POST", f"/api/v1/cases/{w.c1}/steps/s2/links/{w.removed_link}/unlink",
                                           {"reason": "r"}), 409, "link_removed"),
    "unlink_without_reason": (lambda w: w.chen.call(
        "POST", f"/api/v1/cases/{w.c1}/steps/s1/links/{w.s1_link}/unlink", {}), 400, "missing_field"),
    # legal review
    "signoff_not_a_major_decision": (lambda w: w.reviewer.call("POST", f"/api/v1/cases/{w.c1}/steps/s1/signoff",
                                                               {"opinion": "o"}), 422, "not_a_major_decision"),
    "signoff_over_missing_footage": (lambda w: w.reviewer.call("POST", f"/api/v1/cases/{w.c1}/steps/s-dec/signoff",
                                                               {"opinion": "o"}), 409, "footage_incomplete"),
    "signoff_blank_override": (lambda w: w.reviewer.call("POST", f"/api/v1/cases/{w.c1}/steps/s-dec/signoff",
                                                         {"opinion": "o", "override_reason": "  "}), 422,
                               "override_reason_empty"),
    "signoff_by_admin": (lambda w: w.admin.call("POST", f"/api/v1/cases/{w.c1}/steps/s-dec/signoff",
                                                {"opinion": "o"}), 403, "forbidden_role"),
    "signoff_by_case_handler": (lambda w: w.chen.call("POST", f"/api/v1/cases/{w.c1}/steps/s-dec/signoff",
                                                      {"opinion": "o", "override_reason": "x"}), 403,
                                "forbidden_role"),
    # audit
    "audit_unknown_case": (lambda w: w.supervisor.call("GET", "/api/v1/audit?case_id=999"), 404, "unknown_case"),
    "audit_unknown_format": (lambda w: w.supervisor.call("GET", "/api/v1/audit?format=pdf"), 400, "bad_value"),
    "audit_unknown_parameter": (lambda w: w.supervisor.call("GET", "/api/v1/audit?case=1"), 400, "unknown_field"),
    "audit_time_not_a_number": (lambda w: w.supervisor.call("GET", "/api/v1/audit?since=yesterday"), 400,
                                "wrong_type"),
    "audit_by_officer": (lambda w: w.officer.call("GET", "/api/v1/audit"), 403, "forbidden_role"),
    # the requirement list
    "policy_not_yaml": (lambda w: w.admin.call("POST", "/api/v1/policy", {"text": "a: [\n"}), 422, "bad_policy"),
    "policy_unknown_level": (lambda w: w.admin.call("POST", "/api/v1/policy", {
        "text": w.policy_text.replace("hearing: key", "hearing: always").replace("2026.1-default", "v2")}), 422,
        "bad_policy"),
    "policy_unknown_category": (lambda w: w.admin.call("POST", "/api/v1/policy", {
        "text": w.policy_text.replace("  fees: {}", "  taxes: {}").replace("2026.1-default", "v3")}), 422,
        "bad_policy"),
    "policy_version_reused": (lambda w: w.admin.call("POST", "/api/v1/policy", {
        "text": w.policy_text.replace("hearing: key", "hearing: full")}), 409, "policy_version_exists"),
    "policy_unknown_version": (lambda w: w.admin.call("GET", "/api/v1/policy/versions/nope"), 404,
                               "unknown_policy_version"),
    "policy_by_supervisor": (lambda w: w.supervisor.call("POST", "/api/v1/policy", {"text": w.policy_text}), 403,
                             "forbidden_role"),
}


async def snapshot(server: RunningServer) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the case tables and the findings."""
    async with server.services.db.read() as conn:
        return {t.name: [tuple(r) for r in (await conn.execute(sa.select(t).order_by(*t.primary_key.columns))).all()]
                for t in TABLES}


async def test_bad_input_is_refused_and_changes_nothing(w: W) -> None:
    failures = []
    for name, (call, status, code) in CASES.items():
        before = await snapshot(w.server)
        reply = await call(w)
        if (reply.status, reply.code) != (status, code):
            failures.append(f"{name}: expected {status} {code}, got {reply.status} {reply.code}: {reply.body[:200]!r}")
            continue
        if not reply.headers["Content-Type"].startswith("application/problem+json"):
            failures.append(f"{name}: not a problem document")
        if await snapshot(w.server) != before:
            failures.append(f"{name}: the refusal changed stored data")
    assert not failures, "\n".join(failures)
    assert (await w.admin.call("GET", "/healthz", token=None)).status == 200


async def test_policy_problems_name_their_line(w: W) -> None:
    text = w.policy_text.replace("hearing: key", "hearing: always").replace("2026.1-default", "v9")
    line = next(i for i, t in enumerate(text.splitlines(), start=1) if "hearing: always" in t)
    reply = await w.admin.call("POST", "/api/v1/policy", {"text": text})
    assert reply.json["problems"] == [f"policy:{line}: activities.hearing: 'always' is not one of none, key, full"]


async def test_a_new_policy_version_applies_to_new_steps_only(w: W) -> None:
    text = w.policy_text.replace("  hearing: key", "  hearing: full").replace("2026.1-default", "2026.2")
    loaded = await w.admin.ok("POST", "/api/v1/policy", {"text": text}, 201)
    assert loaded["version"] == "2026.2" and loaded["table"]["penalty"]["hearing"] == "full"
    again = await w.admin.call("POST", "/api/v1/policy", {"text": text})
    assert again.status == 200 and again.json["created"] is False
    old = await w.chen.ok("GET", f"/api/v1/cases/{w.c1}/steps/s-miss")
    assert (old["requirement"], old["policy_version"]) == ("key", "2026.1-default")
    new = await w.chen.ok("POST", f"/api/v1/cases/{w.c1}/steps", {"id": "s-hear-2", "stage": "review",
                                                                   "activity": "hearing"}, 201)
    assert (new["requirement"], new["policy_version"]) == ("full", "2026.2")
    versions = (await w.officer.ok("GET", "/api/v1/policy/versions"))["versions"]
    assert [v["version"] for v in versions] == ["2026.1-default", "2026.2"]
