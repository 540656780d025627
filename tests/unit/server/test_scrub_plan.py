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


def test_a_round_over_its_cpu_share_is_followed_by_a_pause_that_restores_the_average() -> None:
    from server.services.scrub import pause_after

    assert pause_after(0.5, 10, 10) == 0.0  # 5 % of a core over 10 s: no pause
    assert pause_after(1.0, 10, 10) == 0.0  # exactly 10 %
    assert pause_after(3.0, 10, 10) == 20.0  # 3 s of CPU at 10 % needs 30 s in all
    assert pause_after(3.0, 10, 100) == 0.0
