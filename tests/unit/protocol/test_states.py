"""The chunk state table: every (state, event) pair is either exactly the legal move or refused."""

from __future__ import annotations

import itertools

import pytest

from protocol.errors import LocalProtocolError, StateError
from protocol.states import MUST_KEEP, TRANSITIONS, ChunkEvent, ChunkState, advance, can

S, E = ChunkState, ChunkEvent

#: The table as the design describes it, written out independently of protocol/states.py.
LEGAL = {
    (S.COMMITTED, E.ANNOUNCE): S.ANNOUNCED,
    (S.COMMITTED, E.UPLOAD): S.UPLOADED,
    (S.ANNOUNCED, E.ANNOUNCE): S.ANNOUNCED,
    (S.ANNOUNCED, E.UPLOAD): S.UPLOADED,
    (S.UPLOADED, E.ANNOUNCE): S.UPLOADED,
    (S.UPLOADED, E.UPLOAD): S.UPLOADED,
    (S.UPLOADED, E.VERIFY): S.VERIFIED,
    (S.UPLOADED, E.REJECT): S.REJECTED,
    (S.VERIFIED, E.ANNOUNCE): S.VERIFIED,
    (S.VERIFIED, E.UPLOAD): S.VERIFIED,
    (S.VERIFIED, E.VERIFY): S.VERIFIED,
    (S.VERIFIED, E.FREE): S.FREED,
    (S.REJECTED, E.ANNOUNCE): S.REJECTED,
    (S.REJECTED, E.UPLOAD): S.UPLOADED,
    (S.FREED, E.ANNOUNCE): S.FREED,
}
PAIRS = list(itertools.product(ChunkState, ChunkEvent))


def test_the_table_is_exactly_the_expected_one() -> None:
    assert TRANSITIONS == LEGAL


@pytest.mark.parametrize(("state", "event"), PAIRS, ids=[f"{s.value}-{e.value}" for s, e in PAIRS])
def test_every_transition(state: ChunkState, event: ChunkEvent) -> None:
    if (state, event) in LEGAL:
        assert can(state, event)
        assert advance(state, event) is LEGAL[(state, event)]
    else:
        assert not can(state, event)
        with pytest.raises(StateError, match=f"a chunk in state '{state.value}' cannot {event.value}") as err:
            advance(state, event)
        assert err.value.code == "illegal_transition"
        assert isinstance(err.value, LocalProtocolError)  # our misuse, never a peer's fault


def test_only_a_verified_chunk_can_be_freed() -> None:
    assert [s for s in ChunkState if can(s, E.FREE)] == [S.VERIFIED]
    assert all(not can(S.FREED, e) for e in ChunkEvent if e is not E.ANNOUNCE)


def test_the_device_keeps_every_chunk_not_yet_verified() -> None:
    assert {S.COMMITTED, S.ANNOUNCED, S.UPLOADED, S.REJECTED} == MUST_KEEP
    assert S.VERIFIED not in MUST_KEEP
    assert S.FREED not in MUST_KEEP


def test_every_state_is_reachable_from_committed() -> None:
    reached, frontier = {S.COMMITTED}, [S.COMMITTED]
    while frontier:
        state = frontier.pop()
        for event in ChunkEvent:
            if can(state, event) and (nxt := advance(state, event)) not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(ChunkState)
