"""Clocks: every piece of logic that needs the time takes a :class:`Clock`.

Production code uses :class:`SystemClock`; tests and simulators use :class:`FakeClock`, which
only moves when told to (or, in auto-advance mode, jumps straight to the next sleeper), so a
suite can run hours of device time in seconds. protocol/ never reads a clock: callers pass
``now_ms`` into it.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """What code may ask of the time."""

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the Unix epoch, UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for intervals and timeouts)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        """Milliseconds since the epoch from the system clock."""
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when advanced.

    ``advance(s)`` moves time forward and wakes every sleeper whose deadline has passed.
    With ``auto_advance=True``, a ``sleep`` that would block jumps time straight to the
    earliest pending deadline once the event loop has nothing else to do, so code written
    against real time runs as fast as the CPU allows.
    """

    def __init__(self, start_ms: int = 1_767_225_600_000, *, auto_advance: bool = False) -> None:
        # Default start: 2026-01-01T00:00:00Z, a fixed instant so golden outputs are stable.
        self._now_ms = start_ms
        self._mono = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self.auto_advance = auto_advance
        self._driver: asyncio.Task[None] | None = None

    def now_ms(self) -> int:
        """The fake wall-clock time."""
        return self._now_ms

    def monotonic(self) -> float:
        """The fake monotonic time in seconds (starts at 0)."""
        return self._mono

    def set_wall(self, now_ms: int) -> None:
        """Step the wall clock (as NTP or a user might), leaving monotonic time alone."""
        self._now_ms = now_ms

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake the sleepers that are due."""
        if seconds < 0:
            raise ValueError("a clock cannot be advanced backwards")
        self._mono += seconds
        self._now_ms += round(seconds * 1000)
        self._wake_due()

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._mono + 1e-9:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    async def sleep(self, seconds: float) -> None:
        """Wait until the fake clock has moved ``seconds`` forward."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._counter), fut))
        if self.auto_advance and (self._driver is None or self._driver.done()):
            self._driver = loop.create_task(self._drive())
        await fut

    async def _drive(self) -> None:
        # Let every runnable task run first, so time only jumps when all are waiting on it.
        while self._sleepers:
            for _ in range(20):
                await asyncio.sleep(0)
            if not self._sleepers:
                return
            deadline = self._sleepers[0][0]
            if deadline > self._mono:
                self.advance(deadline - self._mono)
            else:
                self._wake_due()


class ScaledClock:
    """Real time sped up by a constant factor: what simulations and the demo run on.

    Unlike :class:`FakeClock`'s auto-advance, which jumps whenever the event loop looks idle
    (and so also while real network I/O is in flight), a scaled clock keeps every duration in
    proportion: a 5-minute freshness window stays 5 simulated minutes however slow the machine.
    """

    def __init__(self, speed: float, start_ms: int | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._real0 = time.monotonic()
        self._start_ms = start_ms if start_ms is not None else time.time_ns() // 1_000_000

    def now_ms(self) -> int:
        """Simulated wall-clock time."""
        return self._start_ms + int((time.monotonic() - self._real0) * 1000 * self.speed)

    def monotonic(self) -> float:
        """Simulated seconds since the clock was made."""
        return (time.monotonic() - self._real0) * self.speed

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of simulated time."""
        await asyncio.sleep(max(0.0, seconds) / self.speed)
