"""The pre-event ring: the last N seconds of closed chunks, kept in memory while armed.

When recording starts, the ring's chunks are handed on first (flagged ``pre_event``), so the
footage shows what led up to the officer pressing the button. The ring keeps the shortest run of
newest chunks that covers at least N seconds (so at most N plus one chunk), and never more than a
byte cap: memory stays bounded whatever the encoder does. Nothing here is ever written to disk,
and chunks that age out were never given sequence numbers (DESIGN: unused pre-event video is
discarded without consuming numbers).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

from agent.media.chunk import EncodedChunk

log = logging.getLogger(__name__)


def evict_count(durations_ms: Sequence[int], sizes: Sequence[int], keep_ms: int, max_bytes: int) -> int:
    """How many of the oldest chunks (listed oldest first) to drop to respect both bounds."""
    total_ms, total_bytes = sum(durations_ms), sum(sizes)
    n = 0
    while n < len(durations_ms):
        # Drop the oldest if the rest still covers keep_ms, or if the bytes are over the cap.
        if total_ms - durations_ms[n] >= keep_ms or total_bytes > max_bytes:
            total_ms -= durations_ms[n]
            total_bytes -= sizes[n]
            n += 1
        else:
            break
    return n


class PreEventRing:
    """A bounded ring of pre-event chunks."""

    def __init__(self, keep_ms: int, max_bytes: int) -> None:
        if keep_ms < 0 or max_bytes < 0:
            raise ValueError("pre-event bounds cannot be negative")
        self.keep_ms = keep_ms
        self.max_bytes = max_bytes
        self._chunks: deque[EncodedChunk] = deque()
        self.evicted = 0

    @property
    def enabled(self) -> bool:
        """Whether the ring keeps anything at all."""
        return self.keep_ms > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def duration_ms(self) -> int:
        """Total duration held."""
        return sum(c.duration_ms for c in self._chunks)

    @property
    def size(self) -> int:
        """Total bytes held."""
        return sum(c.size for c in self._chunks)

    def add(self, chunk: EncodedChunk) -> list[EncodedChunk]:
        """Keep ``chunk`` (flagged pre-event); return the chunks dropped to stay within bounds."""
        self._chunks.append(chunk if chunk.pre_event else chunk.with_pre_event(True))
        n = evict_count(
            [c.duration_ms for c in self._chunks],
            [c.size for c in self._chunks],
            self.keep_ms,
            self.max_bytes,
        )
        dropped = [self._chunks.popleft() for _ in range(n)]
        self.evicted += len(dropped)
        return dropped

    def drain(self) -> list[EncodedChunk]:
        """Take every chunk out, oldest first."""
        chunks = list(self._chunks)
        self._chunks.clear()
        return chunks

    def clear(self) -> int:
        """Discard everything; return how many chunks were dropped."""
        n = len(self._chunks)
        self._chunks.clear()
        return n
