"""Trust by sequence cutoff, never by the device clock."""

from __future__ import annotations

from server.trust import STATE_TRANSITIONS, entry_trusted, governing_state

ENROLLED = ("active", None)


def test_enrolled_device_is_trusted() -> None:
    assert entry_trusted([ENROLLED], 0, None)


def test_entries_after_a_loss_cutoff_are_untrusted_for_good() -> None:
    changes = [ENROLLED, ("lost", 10), ("active", 20)]
    assert [entry_trusted(changes, s, None) for s in (10, 11, 20, 21)] == [True, False, False, True]
    assert governing_state(changes, 15) == "lost"


def test_loss_before_any_receipt_covers_everything() -> None:
    assert not entry_trusted([ENROLLED, ("lost", None)], 0, None)


def test_retired_key_is_untrusted_after_its_last_sequence() -> None:
    assert entry_trusted([ENROLLED], 5, 5)
    assert not entry_trusted([ENROLLED], 6, 5)


def test_revoked_is_final() -> None:
    assert STATE_TRANSITIONS["revoked"] == frozenset()
    assert all(state in STATE_TRANSITIONS for targets in STATE_TRANSITIONS.values() for state in targets)
