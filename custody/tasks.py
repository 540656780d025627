"""Stopping background tasks for certain.

A single ``task.cancel()`` followed by ``await task`` is not enough on Python 3.11: there,
``asyncio.wait_for`` returns the awaited result instead of raising ``CancelledError`` when the
cancellation arrives in the same loop iteration as that result (CPython gh-86296, fixed in 3.12).
aiomqtt waits for every PUBACK and SUBACK that way, so a device's status task cancelled just as
its status was acknowledged carried on as if nothing had happened and then waited for ever for a
link that was gone; whoever awaited it (a simulated power cut, a shutdown) hung with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

#: How long a cancelled task may take to end before it is cancelled again.
AGAIN_AFTER_S = 0.5


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, again_after_s: float = AGAIN_AFTER_S) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling again any still running
    after ``again_after_s`` (one that swallowed its cancellation ends at its next wait).

    A task that ends with an exception other than its cancellation has it logged (at INFO: while
    things stop, a failure is usually the expected one, such as a sender whose connection just
    closed), not raised: the caller is stopping everything and must not be stopped half-way.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=again_after_s)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.info("task %s ended with %r while being stopped", task.get_name(), task.exception())
        if pending:
            log.info("%d task(s) still running after being cancelled (%s); cancelling again",
                     len(pending), ", ".join(sorted(task.get_name() for task in pending)))


def discard(future: asyncio.Future[Any]) -> None:
    """Cancel ``future`` if it is still pending and drop its outcome, whatever it turns out to be.

    For a wait left behind when its owner was cancelled mid-``asyncio.wait`` (aiomqtt's message
    iterator, say): its later failure (the connection closed) is expected, and without this it
    is logged as "Task exception was never retrieved".
    """
    future.cancel()
    future.add_done_callback(_drop_outcome)


def _drop_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
