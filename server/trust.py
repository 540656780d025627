"""Whether an entry is trusted as evidence: decided by its sequence number, never by the device clock.

Every change of a device's state records a cutoff, the last receipted sequence number at that
moment. The change that governs an entry is the latest one whose cutoff is below the entry's
sequence: entries after a "lost" cutoff are untrusted even if the device's clock says otherwise,
and entries between a loss and a later reactivation stay untrusted for good.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Device states; only ``active`` yields trusted entries.
DEVICE_STATES = ("active", "suspended", "lost", "revoked")

#: Allowed state changes (a data table, like the chunk states): revoked is final.
STATE_TRANSITIONS: dict[str, frozenset[str]] = {
    "active": frozenset({"suspended", "lost", "revoked"}),
    "suspended": frozenset({"active", "lost", "revoked"}),
    "lost": frozenset({"active", "suspended", "revoked"}),
    "revoked": frozenset(),
}


def governing_state(changes: Iterable[tuple[str, int | None]], seq: int) -> str | None:
    """The state in force for ``seq``, from ``(state, cutoff_seq)`` changes in the order they were made.

    A cutoff of None means nothing was receipted yet: the change governs every sequence number.
    """
    state = None
    for changed_to, cutoff in changes:
        if cutoff is None or cutoff < seq:
            state = changed_to
    return state


def entry_trusted(changes: Iterable[tuple[str, int | None]], seq: int, key_retired_after_seq: int | None) -> bool:
    """True when the device was active for ``seq`` and the signing key was not retired before it."""
    if key_retired_after_seq is not None and seq > key_retired_after_seq:
        return False
    return governing_state(changes, seq) in (None, "active")
