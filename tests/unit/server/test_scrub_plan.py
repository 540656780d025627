"""The scrubber's decisions: how much one round reads, and how long it pauses after."""

from __future__ import annotations

import os
import time

import pytest

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


def test_the_budget_falls_while_the_event_loop_is_busy() -> None:
    from server.config import ScrubConfig
    from server.services.scrub import budget_percent

    config = ScrubConfig(cpu_percent=10, busy_cpu_percent=2, busy_percent=60)
    assert budget_percent(0.0, config) == 10
    assert budget_percent(0.6, config) == 10  # at the threshold: not busy yet
    assert budget_percent(0.61, config) == 2
    assert budget_percent(1.0, config) == 2


async def test_a_round_pauses_longer_under_load_and_decides_again_as_the_load_falls(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typing import Any, cast

    from server.config import ScrubConfig
    from server.services.scrub import Scrubber, ScrubReport

    config = ScrubConfig(interval_s=1, cpu_percent=10, busy_cpu_percent=2, busy_percent=60)
    scrubber = Scrubber(cast(Any, None), cast(Any, None), cast(Any, None), config, cast(Any, None))

    async def run_once(budget_bytes: int) -> ScrubReport:
        return ScrubReport(checked=1, cpu_s=0.05)  # 5 % of a 1 s interval

    shares = iter([0.9, 0.1])  # busy when the round ends, quiet a second later
    monkeypatch.setattr(scrubber, "run_once", run_once)
    monkeypatch.setattr(scrubber, "load", lambda: next(shares))
    began = time.monotonic()
    await scrubber.round()
    # Busy: 0.05 s of CPU at 2 % needs 2.5 s in all, so it paused; after 1 s the load was gone, and
    # at 10 % the 2 s already passed were enough.
    assert 0.9 <= time.monotonic() - began < 2.0
    assert scrubber.budget_percent == 10
    quiet = iter([0.1])
    monkeypatch.setattr(scrubber, "load", lambda: next(quiet))
    began = time.monotonic()
    await scrubber.round()
    assert time.monotonic() - began < 0.5  # never busy: no pause at all


def test_the_load_is_the_busier_of_the_event_loop_and_the_process_on_its_cores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from typing import Any, cast

    from server.config import ScrubConfig
    from server.services import scrub

    marks = iter([(0.0, 0.0, 0.0), (0.3, 0.9, 1.0), (1.2, 1.8, 2.0)])
    monkeypatch.setattr(scrub, "_cpu_mark", lambda: next(marks))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # pinned to one core
    scrubber = scrub.Scrubber(cast(Any, None), cast(Any, None), cast(Any, None), ScrubConfig(), cast(Any, None))
    # The loop was on the CPU 30 % of the time, the whole process 90 % of its one core: busy.
    assert scrubber.load() == pytest.approx(0.9)
    # Then the loop 90 %, the process (loop included) 90 %.
    assert scrubber.load() == pytest.approx(0.9)
    # On four cores, two cores' worth of worker threads and a loop at 30 %: half the process's room.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    marks = iter([(1.5, 3.8, 3.0)])
    assert scrubber.load() == pytest.approx(0.5)
