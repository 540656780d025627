"""Chain verification (the numbered checklist) and the incremental ChainTracker."""

from __future__ import annotations

from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import findings as F
from protocol.chain import ChainTracker, entry_hash, missing_ranges, verify_chain
from protocol.envelope import Envelope
from protocol.messages import GENESIS_PREV, parse_entry
from tests.unit.protocol import samples as S
from tests.unit.protocol.bad_messages.make_corpus import good_chain
from tests.unit.protocol.strategies import PROPERTY

DEVICE = S.DEVICE_KEY.public


@cache
def _chain() -> tuple[Envelope, ...]:
    """Three recordings of start, four chunks, stop: seq 0-17."""
    return tuple(good_chain(recordings=3))


def _links() -> list[tuple[int, str, str]]:
    """(seq, hash, prev) of every entry of the chain."""
    return [(parse_entry(e).seq, e.hash.hex(), parse_entry(e).prev) for e in _chain()]


# -- verify_chain ----------------------------------------------------------------------------------


def test_a_good_chain_passes_every_step() -> None:
    report = verify_chain([e.raw for e in _chain()], DEVICE)
    assert report.ok
    assert [s.number for s in report.steps] == list(range(1, 9))
    assert all(s.passed for s in report.steps)
    assert report.findings == []
    assert len(report.entries) == 18
    assert report.lines()[0] == "(1) ok   entries are well-formed signed chain entries"
    assert report.device_id == S.DEVICE_ID


def test_envelopes_and_bytes_verify_alike() -> None:
    assert verify_chain(list(_chain()), DEVICE).ok


def test_entry_hash_is_sha256_of_the_exact_bytes() -> None:
    env = _chain()[3]
    assert entry_hash(env.raw) == env.hash.hex()
    assert _links()[4][2] == env.hash.hex()  # seq 4's prev
    assert _links()[0][2] == GENESIS_PREV


def test_a_slice_can_start_anywhere_when_start_seq_is_none() -> None:
    tail = [e.raw for e in _chain()[7:12]]
    assert verify_chain(tail, DEVICE, start_seq=None).ok
    report = verify_chain(tail, DEVICE)  # as a whole chain it misses seq 0-6
    assert [(f.code, f.evidence) for f in report.findings] == [(F.CHAIN_GAP, {"from_seq": 0, "to_seq": 6})]
    assert verify_chain(tail, DEVICE, start_seq=7).ok


def test_the_failing_step_is_named_in_the_report_lines() -> None:
    chain = [e.raw for e in _chain()]
    report = verify_chain(chain[:3] + chain[4:], DEVICE)
    lines = report.lines()
    assert "(7) FAIL no sequence number is missing" in lines
    assert "      chain.gap: gap at seq 3 (1 missing)" in lines


def test_an_entry_with_a_bad_signature_takes_no_part_in_the_link_checks() -> None:
    chain = [e.raw for e in _chain()[:6]]
    forged = S.manifest(3, "ee" * 32, index=2).sign(S.OTHER_DEVICE_KEY).raw
    report = verify_chain([*chain[:3], forged, *chain[4:]], DEVICE)
    codes = [(s.number, f.code.code) for s in report.steps for f in s.findings]
    # Its seq 3 is missing from the trusted entries (a gap), but its prev is never checked.
    assert codes == [(2, "signature.invalid"), (7, "chain.gap")]


@PROPERTY
@given(data=st.data())
def test_removing_entries_is_reported_as_exactly_the_missing_ranges(data: st.DataObject) -> None:
    chain = list(_chain())
    removed = data.draw(st.sets(st.integers(0, len(chain) - 2), max_size=8))  # the last one stays
    kept = [e.raw for i, e in enumerate(chain) if i not in removed]
    report = verify_chain(kept, DEVICE)
    gaps = [(f.evidence["from_seq"], f.evidence["to_seq"]) for f in report.findings]
    assert all(f.code is F.CHAIN_GAP for f in report.findings)
    assert gaps == missing_ranges(set(range(len(chain))) - removed, 0, len(chain) - 1)


@pytest.mark.parametrize(
    ("present", "first", "last", "expected"),
    [
        ([], 0, 3, [(0, 3)]),
        ([0, 1, 2, 3], 0, 3, []),
        ([1, 3], 0, 3, [(0, 0), (2, 2)]),
        ([0, 5, 9], 0, 9, [(1, 4), (6, 8)]),
        ([7, 8], 5, 10, [(5, 6), (9, 10)]),
        ([1, 2, 30], 0, 2, [(0, 0)]),
    ],
)
def test_missing_ranges(present: list[int], first: int, last: int, expected: list[tuple[int, int]]) -> None:
    assert missing_ranges(present, first, last) == expected


# -- ChainTracker ------------------------------------------------------------------------------------


@PROPERTY
@given(st.permutations(range(18)))
def test_tracker_takes_entries_in_any_order_and_ends_without_findings(order: list[int]) -> None:
    links = _links()
    tracker = ChainTracker(S.DEVICE_ID)
    seen: set[int] = set()
    for i in order:
        seq, h, prev = links[i]
        result = tracker.add(seq, h, prev)
        assert result.new
        assert result.findings == ()
        seen.add(seq)
        # Every gap below the highest sequence seen so far is open, and nothing else.
        assert tracker.open_gaps() == missing_ranges(seen, 0, max(seen))
    assert tracker.open_gaps() == []
    assert tracker.last_seq == 17
    assert all(seq in tracker for seq in range(18))
    assert tracker.hash_at(5) == links[5][1]


def test_a_duplicate_delivery_is_not_new_and_finds_nothing() -> None:
    seq, h, prev = _links()[0]
    tracker = ChainTracker(S.DEVICE_ID)
    assert tracker.add(seq, h, prev).new
    again = tracker.add(seq, h, prev)
    assert not again.new
    assert again.findings == ()


def test_a_gap_is_provisional_and_closes_when_the_entry_arrives() -> None:
    links = _links()
    tracker = ChainTracker(S.DEVICE_ID)
    for i in (0, 1, 4, 5):
        tracker.add(*links[i])
    assert tracker.open_gaps() == [(2, 3)]
    tracker.add(*links[3])
    assert tracker.open_gaps() == [(2, 2)]
    assert tracker.add(*links[2]).findings == ()
    assert tracker.open_gaps() == []


def test_the_status_last_seq_opens_gaps_for_entries_never_received() -> None:
    links = _links()
    tracker = ChainTracker(S.DEVICE_ID)
    assert tracker.last_seq is None
    assert tracker.open_gaps() == []
    tracker.note_status(None)  # a device that has committed nothing yet
    assert tracker.open_gaps() == []
    tracker.note_status(3)
    assert tracker.open_gaps() == [(0, 3)]  # the device says 0-3 exist; none arrived
    tracker.add(*links[0])
    tracker.add(*links[1])
    assert tracker.open_gaps() == [(2, 3)]
    tracker.note_status(2)  # an older status never lowers what is known
    assert tracker.known_last_seq == 3
    assert tracker.open_gaps() == [(2, 3)]
    tracker.add(*links[5])  # an entry beyond the status raises last_seq too
    assert tracker.last_seq == 5
    assert tracker.open_gaps() == [(2, 4)]


def test_tracker_reports_sequence_reuse() -> None:
    links = _links()
    tracker = ChainTracker(S.DEVICE_ID)
    tracker.add(*links[0])
    tracker.add(*links[1])
    result = tracker.add(1, "ab" * 32, links[0][1])
    assert not result.new
    assert [f.code for f in result.findings] == [F.CHAIN_SEQ_REUSE]
    assert result.findings[0].evidence == {"seq": 1, "hash": "ab" * 32, "other_hash": links[1][1]}
    assert tracker.hash_at(1) == links[1][1]  # the first entry stays


def test_tracker_reports_a_fork() -> None:
    links = _links()
    tracker = ChainTracker(S.DEVICE_ID)
    for i in range(4):
        tracker.add(*links[i])
    # A second entry claiming seq 4 but following seq 2, like seq 3 does.
    result = tracker.add(4, "cd" * 32, links[2][1])
    codes = {f.code for f in result.findings}
    assert codes == {F.CHAIN_FORK, F.CHAIN_PREV_MISMATCH}
    fork = next(f for f in result.findings if f.code is F.CHAIN_FORK)
    assert fork.message.startswith("seq 4 and seq 3 both follow entry")


def test_tracker_finds_a_broken_link_whichever_side_arrives_first() -> None:
    links = _links()
    forward, backward = ChainTracker(S.DEVICE_ID), ChainTracker(S.DEVICE_ID)
    for i in range(3):
        forward.add(*links[i])
        backward.add(*links[i])
    bad_prev = "99" * 32
    # seq 3 arrives after seq 2: its prev is checked at once.
    result = forward.add(3, links[3][1], bad_prev)
    assert [(f.code, f.evidence["seq"]) for f in result.findings] == [(F.CHAIN_PREV_MISMATCH, 3)]
    # seq 4 arrives with a bad prev before seq 3; the mismatch shows when seq 3 arrives.
    assert backward.add(4, links[4][1], bad_prev).findings == ()
    result = backward.add(*links[3])
    assert [(f.code, f.evidence["seq"]) for f in result.findings] == [(F.CHAIN_PREV_MISMATCH, 4)]
    assert result.findings[0].evidence["expected_prev"] == links[3][1]


def test_tracker_checks_the_genesis_link() -> None:
    tracker = ChainTracker(S.DEVICE_ID)
    result = tracker.add(0, "11" * 32, "22" * 32)
    assert [f.code for f in result.findings] == [F.CHAIN_PREV_MISMATCH]
    assert result.findings[0].subject == S.DEVICE_ID
