"""The scrubber's pure decision: how much one round reads."""

from __future__ import annotations

from server.services.scrub import Candidate, plan_round


def c(size: int, seq: int = 0) -> Candidate:
    return Candidate("a" * 24, seq, size)


def test_a_round_reads_up_to_its_budget() -> None:
    chunks = [c(100, i) for i in range(10)]
    assert [x.seq for x in plan_round(chunks, 350)] == [0, 1, 2]
    assert len(plan_round(chunks, 10_000)) == 10


def test_a_round_always_reads_at_least_one_chunk() -> None:
    assert [x.seq for x in plan_round([c(5000, 7), c(1, 8)], 10)] == [7]
    assert plan_round([], 10) == []
