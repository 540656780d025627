"""The one table of chunk states and transitions (a data table, like h11's ``_state.py``).

A chunk is ``committed`` on the device (bytes durable, entry signed), ``announced`` once the
server knows its entry, ``uploaded`` once its bytes are in the footage store, then ``verified``
(a receipt exists) or ``rejected``; the device frees its copy only after a verified receipt.
The same table serves both sides: the agent never moves a chunk the server has not moved.
"""

from __future__ import annotations

from enum import StrEnum

from protocol.errors import StateError


class ChunkState(StrEnum):
    """Where a chunk is in its life."""

    COMMITTED = "committed"
    ANNOUNCED = "announced"
    UPLOADED = "uploaded"
    VERIFIED = "verified"
    REJECTED = "rejected"
    FREED = "freed"


class ChunkEvent(StrEnum):
    """What happens to a chunk."""

    ANNOUNCE = "announce"  # entry published over MQTT, or carried by an upload request
    UPLOAD = "upload"  # bytes stored
    VERIFY = "verify"  # all checks passed, receipt signed
    REJECT = "reject"  # a check failed
    FREE = "free"  # device deleted its local copy after checking the receipt


S, E = ChunkState, ChunkEvent

#: (state, event) -> next state. Anything absent is illegal.
TRANSITIONS: dict[tuple[ChunkState, ChunkEvent], ChunkState] = {
    (S.COMMITTED, E.ANNOUNCE): S.ANNOUNCED,
    # Upload over HTTP carries the entry too: a device that cannot reach the broker still delivers.
    (S.COMMITTED, E.UPLOAD): S.UPLOADED,
    (S.ANNOUNCED, E.ANNOUNCE): S.ANNOUNCED,  # duplicate delivery of the entry is harmless
    (S.ANNOUNCED, E.UPLOAD): S.UPLOADED,
    (S.UPLOADED, E.ANNOUNCE): S.UPLOADED,
    (S.UPLOADED, E.UPLOAD): S.UPLOADED,  # idempotent re-upload of the same bytes
    (S.UPLOADED, E.VERIFY): S.VERIFIED,
    (S.UPLOADED, E.REJECT): S.REJECTED,
    (S.VERIFIED, E.ANNOUNCE): S.VERIFIED,
    (S.VERIFIED, E.UPLOAD): S.VERIFIED,  # same chunk again gets the same receipt
    (S.VERIFIED, E.VERIFY): S.VERIFIED,
    (S.VERIFIED, E.FREE): S.FREED,
    (S.REJECTED, E.ANNOUNCE): S.REJECTED,
    (S.REJECTED, E.UPLOAD): S.UPLOADED,  # a corrected re-upload of the right bytes may verify
    (S.FREED, E.ANNOUNCE): S.FREED,
}

#: States in which the device must keep its local copy.
MUST_KEEP = frozenset({S.COMMITTED, S.ANNOUNCED, S.UPLOADED, S.REJECTED})


def advance(state: ChunkState, event: ChunkEvent) -> ChunkState:
    """The next state, or :class:`StateError` for a transition the table does not allow."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise StateError(f"a chunk in state {state.value!r} cannot {event.value}") from None


def can(state: ChunkState, event: ChunkEvent) -> bool:
    """Whether ``event`` is legal in ``state``."""
    return (state, event) in TRANSITIONS
