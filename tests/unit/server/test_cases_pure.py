"""Pure parts of the case audit: the shipped requirement list, coverage arithmetic, report rendering."""

from __future__ import annotations

import re

import pytest

from protocol.findings import all_codes
from server.audit_report import _EN, _ZH, fmt_time, render_csv, render_text
from server.case_terms import ACTIVITIES, CATEGORIES
from server.errors import Unprocessable
from server.services.audit import coverage_gaps, merge
from server.services.policy import default_policy_text, parse_policy


def test_shipped_list_follows_the_seeds() -> None:
    policy = parse_policy(default_policy_text())
    table = policy.table()
    assert set(table) == set(CATEGORIES)
    # 音像记录 for the seven contentious activities, in every category (seeds 000 l.53, 001 l.77, 003 l.67).
    for category in CATEGORIES:
        for activity in ("random_inspection", "investigation_evidence", "hearing", "service_of_documents"):
            assert table[category][activity] == "key", (category, activity)
        # 行政强制 touches personal liberty or major property: start to finish everywhere.
        assert table[category]["administrative_compulsion"] == "full"
        assert table[category]["other"] == "none"
    assert table["compulsion"]["on_site_inspection"] == "full"
    assert table["compulsion"]["evidence_preservation"] == "full"
    assert table["levy"]["on_site_inspection"] == "full"
    assert table["penalty"]["on_site_inspection"] == "key"
    assert policy.version == "2026.1-default"


def test_every_rule_of_the_shipped_list_cites_a_seed() -> None:
    lines = default_policy_text().splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.split(":")[0] in ACTIVITIES and not stripped.startswith("#"):
            block = "\n".join(lines[max(0, i - 4):i])
            assert "[S0" in block or "[S0" in line, f"line {i + 1} has no citation: {stripped}"


@pytest.mark.parametrize(("text", "problem"), [
    ("format: custody/recording-requirements/v1\nversion: v1\nactivities:\n  hearing: always\n",
     "policy:4: activities.hearing: 'always' is not one of none, key, full"),
    ("format: custody/recording-requirements/v1\nversion: v1\ncategories:\n  tax: {}\n",
     "policy:4: categories.tax: unknown category (one of licensing, penalty, compulsion, levy, fees, inspection)"),
    ("format: custody/recording-requirements/v1\nversion: v1\nactivities:\n  picnic: key\n",
     "policy:4: activities.picnic: unknown activity (one of on_site_inspection, random_inspection, "
     "investigation_evidence, evidence_preservation, hearing, administrative_compulsion, service_of_documents, "
     "other)"),
    ("format: custody/recording-requirements/v1\nversion: 'has space'\n",
     "policy:2: version: a version of 1 to 64 letters, digits and ._:- is required (it names the list in URLs)"),
    ("format: other\nversion: v1\n", "policy:1: format: must be 'custody/recording-requirements/v1'"),
    ("format: custody/recording-requirements/v1\nversion: v1\nversion: v2\n", "policy:3: version: duplicate key"),
    ("format: custody/recording-requirements/v1\nversion: v1\nextra: 1\n", "policy:3: extra: unknown key"),
])
def test_bad_lists_name_the_line(text: str, problem: str) -> None:
    with pytest.raises(Unprocessable, match=re.escape(problem)) as info:
        parse_policy(text)
    assert info.value.extra["problems"] == [problem]


def test_resolution_order_category_then_activity_then_default() -> None:
    policy = parse_policy("format: custody/recording-requirements/v1\nversion: v1\ndefault: key\n"
                          "activities:\n  hearing: none\ncategories:\n  penalty:\n    hearing: full\n")
    assert policy.requirement("penalty", "hearing") == "full"
    assert policy.requirement("levy", "hearing") == "none"
    assert policy.requirement("levy", "other") == "key"


def test_coverage_gaps() -> None:
    assert merge([(5, 10), (0, 5), (20, 30), (25, 28)]) == [(0, 10), (20, 30)]
    # Covered 0-40 and 80-120 of 0-120: one 40 s gap.
    assert coverage_gaps((0, 120_000), [(0, 40_000), (80_000, 120_000)], 1000) == (80_000, [(40_000, 80_000)])
    # Chunks outside the window are clipped away; a 400 ms seam is within tolerance.
    assert coverage_gaps((10, 100), [(0, 50), (50_500, 60_000)], 10) == (40, [(50, 100)])
    assert coverage_gaps((0, 10_000), [(0, 4_600), (5_000, 10_000)], 1000) == (9_600, [])
    assert coverage_gaps((0, 10_000), [], 1000) == (0, [(0, 10_000)])


def test_every_finding_code_has_zh_and_en_text() -> None:
    audited = {"step.missing_footage", "step.incomplete_coverage", "step.unverified_footage", "chain.gap",
               "chunk.pending_upload", "chunk.verification_failed", "recording.unlinked", "device.offline_with_pending",
               "officer.certificate_expired", "officer.mismatch", "entry.untrusted", "review.override"}
    assert audited <= {c.code for c in all_codes()}
    assert set(_EN) == set(_ZH) == audited


def test_text_and_csv() -> None:
    report = {
        "generated_ms": 1_767_225_600_000, "filters": {"case_id": 3, "officer_id": None}, "summary": {
            "findings": 1, "by_code": {"chain.gap": 1}},
        "scope": {"cases": 1, "steps": 2, "steps_requiring_footage": 1, "recordings": 1},
        "findings": [{"code": "chain.gap", "severity": "high", "subject": "dev/rec", "evidence": {
            "device_id": "dev", "recording_id": "rec", "first": 2, "last": 4, "count": 3, "position": "inside"}}],
    }
    en = render_text(report, "en")
    assert "filters: case_id=3" in en
    assert "[HIGH] Missing entries in a device's chain (chain.gap) dev/rec: device dev: seq 2..4 missing (3) " \
           "inside recording rec" in en
    zh = render_text(report, "zh")
    assert "[HIGH] 设备记录链存在缺失 (chain.gap) dev/rec：设备 dev：录像 rec 之中缺失序号 2..4（3 条）" in zh
    rows = render_csv(report).splitlines()
    assert rows[0] == "severity,code,subject,case_number,step_id,device_id,recording_id,message,evidence"
    assert rows[1].startswith("high,chain.gap,dev/rec,,,dev,rec,")
    assert fmt_time(1_767_225_600_001) == "2026-01-01 00:00:00.001Z"
