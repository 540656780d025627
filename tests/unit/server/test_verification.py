"""The checklist names the first failing step."""

from __future__ import annotations

from server.verification import FAIL, PASS, PROVISIONAL, STEP_BYTES, STEP_CHAIN, STEP_MEDIA, Checklist


def test_first_failure_is_named() -> None:
    c = Checklist()
    c.add(STEP_BYTES, PASS)
    c.add(STEP_CHAIN, PROVISIONAL, "seq 4 has not arrived yet")
    assert c.failed is None
    c.add(STEP_MEDIA, FAIL, "10 video samples, the entry says 11")
    assert c.failed is not None
    assert c.failed.number == 4
    assert c.lines()[2] == "(4) fail        media structure, sample counts and duration match the entry: " \
                           "10 video samples, the entry says 11"
