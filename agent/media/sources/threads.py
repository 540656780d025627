"""Blocking capture loops (PyAV reading a device or file) feeding an asyncio consumer.

PyAV's reads block, so each device or file is read on its own thread and the frames cross into
the event loop through one bounded queue. Two policies for a full queue:

- ``drop``: a live device cannot wait; the newest frame is dropped and counted (the pipeline's
  timeline repeats the previous frame into the gap, so time stays right);
- ``block``: a file can wait; the reading thread pauses until the consumer catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class _End:
    """Marks that one producer finished."""


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ThreadFeed(Generic[T]):
    """Items produced by one or more threads, consumed with ``await get()``.

    A producer is a callable ``produce(emit, stopping)``: it calls ``emit(item)`` for every item and
    returns when done or when ``stopping`` is set. ``get()`` returns None once every producer has
    finished, and re-raises a producer's exception.
    """

    def __init__(self, *, maxsize: int = 16, drop_when_full: bool = False) -> None:
        self._maxsize = maxsize
        self._drop = drop_when_full
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._space = threading.Semaphore(maxsize)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped = 0

    def start(self, name: str, produce: Callable[[Callable[[T], None], threading.Event], None]) -> None:
        """Run ``produce`` on a new daemon thread."""
        loop = self._loop = asyncio.get_running_loop()

        def run() -> None:
            try:
                produce(self._emit, self._stopping)
            except BaseException as exc:  # handed to the consumer, which decides what it means
                loop.call_soon_threadsafe(self._queue.put_nowait, _Failed(exc))
            finally:
                with contextlib.suppress(RuntimeError):  # loop already closed: nobody to tell
                    loop.call_soon_threadsafe(self._queue.put_nowait, _End())

        thread = threading.Thread(target=run, name=name, daemon=True)
        self._running += 1
        self._threads.append(thread)
        thread.start()

    def _emit(self, item: T) -> None:
        loop = self._loop
        assert loop is not None
        if self._drop:
            if not self._space.acquire(blocking=False):
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning("capture queue full: %d frames dropped so far", self.dropped)
                return
        else:
            # Wait for room, but give up promptly when the feed is stopped.
            while not self._space.acquire(timeout=0.1):
                if self._stopping.is_set():
                    return
        try:
            loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # event loop closed under us
            self._stopping.set()

    async def get(self) -> T | None:
        """The next item, or None when every producer has finished."""
        while self._running > 0:
            item = await self._queue.get()
            if isinstance(item, _End):
                self._running -= 1
                continue
            if isinstance(item, _Failed):
                self.stop()
                raise item.exc
            self._space.release()
            return item  # type: ignore[return-value]
        return None

    def stop(self) -> None:
        """Ask every producer to stop (they notice between items)."""
        self._stopping.set()

    async def join(self, wait_s: float = 5.0) -> None:
        """Stop and wait for the threads to end (a device read may take up to a frame to return)."""
        self.stop()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, wait_s)
            if thread.is_alive():
                log.warning("capture thread %s did not stop within %.1f s", thread.name, wait_s)
