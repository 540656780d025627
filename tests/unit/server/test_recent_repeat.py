"""An entry's second copy is recognised by its hash only while that says everything (IngestService.recent_repeat)."""

from __future__ import annotations

import hashlib
from typing import Any

from custody.clock import FakeClock
from server.config import IngestConfig
from server.services.ingest import RECENT_ENTRIES, IngestService

RESEND_AFTER_MS = 10_000


def service(clock: FakeClock) -> IngestService:
    """An ingest service for its in-memory bookkeeping only (no database, keys or store are touched)."""
    none: Any = None
    return IngestService(none, clock, none, none, IngestConfig())


def test_a_copy_is_a_repeat_only_of_its_own_device_and_only_while_fresh() -> None:
    clock = FakeClock(start_ms=1_700_000_000_000)
    ingest = service(clock)
    body = b'{"an": "entry envelope"}'
    h = hashlib.sha256(body).hexdigest()
    assert not ingest.recent_repeat("dev", body, RESEND_AFTER_MS)  # never seen: the full path
    ingest._remember(h, "dev", 3, None)  # stored, no receipt yet
    assert ingest.recent_repeat("dev", body, RESEND_AFTER_MS)
    assert not ingest.recent_repeat("other", body, RESEND_AFTER_MS)  # another topic: refused on the full path
    assert not ingest.recent_repeat("dev", body + b" ", RESEND_AFTER_MS)  # other bytes
    clock.advance(RESEND_AFTER_MS / 1000)
    # Stored here a while ago without a receipt: another process may have receipted it since,
    # and the database has that receipt to send again.
    assert not ingest.recent_repeat("dev", body, RESEND_AFTER_MS)
    ingest._remember(h, "dev", 3, clock.now_ms())  # receipted here just now
    assert ingest.recent_repeat("dev", body, RESEND_AFTER_MS)
    clock.advance(RESEND_AFTER_MS / 1000)
    assert not ingest.recent_repeat("dev", body, RESEND_AFTER_MS)  # old enough to send the receipt again


def test_the_memory_is_bounded() -> None:
    clock = FakeClock(start_ms=1_700_000_000_000)
    ingest = service(clock)
    for i in range(RECENT_ENTRIES + 10):
        ingest._remember(f"{i:064x}", "dev", i, None)
    assert len(ingest._recent) == RECENT_ENTRIES
    assert f"{0:064x}" not in ingest._recent and f"{RECENT_ENTRIES + 9:064x}" in ingest._recent
