"""The rollback guard's decision, without I/O."""

from __future__ import annotations

import pytest

from server.log_guard import LogRolledBack, Published, judge

ROOT = bytes(range(32))
PUB = Published(size=10, root=ROOT, origin="custody/abc")


def test_nothing_published_starts() -> None:
    assert "no published" in judge(None, 0, None)


def test_a_tree_extending_the_published_checkpoint_starts() -> None:
    assert "extends" in judge(PUB, 10, ROOT)
    assert "extends" in judge(PUB, 25, ROOT)


def test_a_shorter_tree_is_refused() -> None:
    with pytest.raises(LogRolledBack, match="has 7 leaves but checkpoint 10 of custody/abc was already published"):
        judge(PUB, 7, None)


def test_a_different_root_is_refused() -> None:
    with pytest.raises(LogRolledBack, match="different root at size 10"):
        judge(PUB, 12, bytes(32))
