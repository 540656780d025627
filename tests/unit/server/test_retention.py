"""The expiry decision (server/retention.py), pure: no database, no store, no clock."""

from __future__ import annotations

from server.retention import (
    CASE,
    DAY_MS,
    INDEFINITE,
    UNLINKED,
    YEAR_MS,
    CaseLife,
    FootageFacts,
    RetentionPolicy,
    retention_for,
    should_expire,
)

T0 = 1_800_000_000_000
POLICY = RetentionPolicy(unlinked_days=183, case_years=2)


def facts(**kw: object) -> FootageFacts:
    return FootageFacts(device_id="d" * 24, recording_id="rec-1", received_ms=T0, **kw)  # type: ignore[arg-type]


def test_unlinked_footage_expires_exactly_after_its_days() -> None:
    f = facts()
    assert retention_for(f, POLICY).klass == UNLINKED
    assert not should_expire(f, T0 + 183 * DAY_MS - 1, POLICY)
    assert should_expire(f, T0 + 183 * DAY_MS, POLICY)


def test_case_footage_is_kept_while_the_case_is_open_then_its_life_plus_years() -> None:
    open_case = facts(cases=(CaseLife(1, None),))
    assert retention_for(open_case, POLICY).klass == CASE
    assert not should_expire(open_case, T0 + 100 * YEAR_MS, POLICY)
    ended = T0 + 30 * DAY_MS
    closed = facts(cases=(CaseLife(1, ended),))
    assert retention_for(closed, POLICY).until_ms == ended + 2 * YEAR_MS
    assert not should_expire(closed, ended + 2 * YEAR_MS - 1, POLICY)
    assert should_expire(closed, ended + 2 * YEAR_MS, POLICY)


def test_the_longest_of_several_cases_wins_and_one_open_case_keeps_it() -> None:
    two = facts(cases=(CaseLife(1, T0), CaseLife(2, T0 + YEAR_MS)))
    assert retention_for(two, POLICY).until_ms == T0 + 3 * YEAR_MS
    assert retention_for(facts(cases=(CaseLife(1, T0), CaseLife(2, None))), POLICY).until_ms is None


def test_never_while_held() -> None:
    f = facts(held=True)
    assert not should_expire(f, T0 + 1000 * YEAR_MS, POLICY)


def test_never_when_linked_to_a_major_decision() -> None:
    f = facts(major_decision=True, cases=(CaseLife(1, T0),))
    assert retention_for(f, POLICY).klass == INDEFINITE
    assert retention_for(f, POLICY).until_ms is None
    assert not should_expire(f, T0 + 1000 * YEAR_MS, POLICY)


def test_retention_only_grows_when_a_link_is_removed() -> None:
    # Linked to a case that ended: kept 2 years after it. Unlinked later: the earlier end is a floor.
    floor = T0 + 2 * YEAR_MS
    f = facts(floor_ms=floor)
    assert retention_for(f, POLICY).until_ms == floor
    assert not should_expire(f, T0 + 183 * DAY_MS, POLICY)


def test_removed_footage_is_never_removed_twice() -> None:
    assert not should_expire(facts(removed=True), T0 + 1000 * YEAR_MS, POLICY)


def test_the_unlinked_class_is_a_minimum_for_case_footage() -> None:
    # A case that ended long before the footage arrived cannot make it expire sooner than unlinked footage.
    f = facts(cases=(CaseLife(1, T0 - 10 * YEAR_MS),))
    assert retention_for(f, POLICY).until_ms == T0 + 183 * DAY_MS
