"""Statistics and retention asserted on the cases/audit scenario (test_cases_scenario.py's day)."""

from __future__ import annotations

import pytest

from tests.integration.server.test_cases_scenario import World, at, legal_review, run_day, world  # noqa: F401

pytestmark = pytest.mark.integration


async def test_stats_and_retention_of_the_scenario_day(world: World) -> None:  # noqa: F811
    w = world
    ids = await run_day(w)
    await legal_review(w, ids["c1"])
    w.goto(at(18))
    officer_report = await w.auditor.ok("GET", "/api/v1/stats?dimension=officer")
    by_officer = {r["key"]: r for r in officer_report["rows"]}
    by_device = {r["key"]: r for r in (await w.auditor.ok("GET", "/api/v1/stats?dimension=device"))["rows"]}
    # 12 recordings in January 2026; 张伟 has 7 steps to record and the hearing is not (the audit's
    # step.missing_footage); every step of 李娜 but one and of 王强 has footage.
    assert {k: (r["month"], r["recordings"], r["steps_required"], r["steps_covered"])
            for k, r in by_officer.items()} == {
        "o-zhang": ("2026-01", 4, 7, 6), "o-li": ("2026-01", 5, 5, 4), "o-wang": ("2026-01", 3, 3, 3)}
    assert sum(r["recordings"] for r in by_device.values()) == 12
    # The month's total counts a step of two officers once (c1-evidence, c1-hearing and c2-seize are shared):
    # 15 officer-steps are 12 steps, 11 of them with footage; the percentiles are over every upload.
    (total,) = officer_report["totals"]
    assert (total["key"], total["month"], total["recordings"], total["steps_required"], total["steps_covered"]) == (
        None, "2026-01", 12, 12, 11)
    assert total["upload_delay_ms"]["count"] == sum(r["upload_delay_ms"]["count"] for r in by_officer.values())
    assert total["uptime_share"] is None  # uptime is a device's own
    c = by_device[w.devices["C"].device_id]
    assert c["findings"].get("officer.certificate_expired", 0) >= 1  # 王强 recorded after his certificate expired
    assert all(0 < r["uptime_share"] < 1 and r["upload_delay_ms"]["count"] > 0 for r in by_device.values())

    # Retention: C1's decision was signed off, so all of C1's footage is kept indefinitely; the orphan
    # recording is unlinked; everything else is linked to a case.
    plan = {r["recording_id"]: r["class"] for r in (await w.auditor.ok("GET", "/api/v1/retention"))["recordings"]}
    assert plan.pop("rec-c1-inspect") == plan.pop("rec-c1-evidence") == "indefinite"
    assert plan.pop("rec-orphan") == "unlinked"
    assert set(plan.values()) == {"case"}
