"""The cyclic garbage collector in long-running event loops: its pauses measured, its work cut.

CPython's cyclic collector stops the whole process while it runs (every thread waits for the
GIL), and a full collection walks every tracked object there is. In a process that builds a
large heap once and then serves for hours (the server, a fleet of simulated devices) that walk
is mostly over objects that will live as long as the process: imports, compiled statements,
the app's routes, each device's state. Measured at 1,000 simulated devices on one server core
(bench/RESULTS.md, eighth pass), the server spent over a second of a three-minute run in its
full collections (the longest 132 ms) and the fleet over five (the longest 388 ms): each pause
is latency added to every chunk in flight, and the fleet's own p99 loop lag matched its longest
pause.

:func:`settle_heap` is called once the start-up heap is built: it collects what start-up left
over, moves what remains to the permanent generation (``gc.freeze``), which no collection walks
again, and raises the young generation's threshold so that a request's short-lived containers
die young instead of being promoted and walked again in full collections. Cycles are still
collected; only the start-up heap is exempt, and it lives as long as the process anyway.

:class:`GcPauses` measures the pauses (``gc.callbacks``) so that a run can say what they cost.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

#: Allocations of tracked objects between young collections (CPython's default is 700). A
#: request's objects live for milliseconds; at the default they outlive two young collections
#: and reach the old generation, whose growth is what triggers full collections.
YOUNG_THRESHOLD = 20_000


def settle_heap(young_threshold: int = YOUNG_THRESHOLD) -> None:
    """Exempt the start-up heap from all later collections and collect the young generation less
    often; call once, after start-up, from the process's main thread."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)


@dataclass
class GcPauses:
    """The collector's pauses while installed: per generation, how many and how long (wall time)."""

    count: list[int] = field(default_factory=lambda: [0, 0, 0])
    total_ms: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    longest_ms: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _started: float = field(default=0.0, repr=False, compare=False)

    def install(self) -> GcPauses:
        """Start measuring; returns self."""
        gc.callbacks.append(self._callback)
        return self

    def uninstall(self) -> None:
        """Stop measuring (the figures stay)."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        ms = (time.perf_counter() - self._started) * 1000
        generation = int(info["generation"])
        self.count[generation] += 1
        self.total_ms[generation] += ms
        self.longest_ms[generation] = max(self.longest_ms[generation], ms)

    def summary(self) -> str:
        """One line: per generation, collections, their total and their longest pause."""
        return "; ".join(f"gen {g}: {n:,} collections, {total:,.0f} ms, longest {longest:,.1f} ms"
                         for g, (n, total, longest) in enumerate(zip(self.count, self.total_ms, self.longest_ms,
                                                                     strict=True)))
