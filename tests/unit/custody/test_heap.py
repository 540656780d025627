"""custody.heap: the collector's pauses are counted per generation, and the start-up heap is frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from custody.heap import YOUNG_THRESHOLD, GcPauses, settle_heap


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """settle_heap changes process-wide state: put it back for the other tests."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_pauses_are_counted_per_generation_until_uninstalled() -> None:
    pauses = GcPauses().install()
    try:
        gc.collect(2)
        gc.collect(0)
        gc.collect(0)
    finally:
        pauses.uninstall()
    assert pauses.count[2] >= 1 and pauses.count[0] >= 2
    assert pauses.total_ms[2] > 0 and pauses.longest_ms[2] <= pauses.total_ms[2]
    counted = list(pauses.count)
    gc.collect()
    assert pauses.count == counted  # uninstalled: no longer counting
    assert "gen 2: " in pauses.summary() and "longest" in pauses.summary()


def test_uninstall_twice_is_harmless() -> None:
    pauses = GcPauses().install()
    pauses.uninstall()
    pauses.uninstall()
    assert pauses._callback not in gc.callbacks


@pytest.mark.usefixtures("restore_gc")
def test_settle_heap_freezes_what_lives_and_collects_what_does_not() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the cyclic collector frees it

    kept = Node()
    garbage = Node()
    garbage_ref, kept_ref = weakref.ref(garbage), weakref.ref(kept)
    del garbage
    settle_heap()
    assert garbage_ref() is None  # collected before the freeze, not frozen for ever
    assert kept_ref() is kept
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert not any(o is kept for o in gc.get_objects())  # frozen: no collection walks it
