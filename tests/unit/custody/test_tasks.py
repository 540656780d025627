"""custody.tasks.cancel_and_wait: a task that swallows its cancellation is stopped all the same."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys

import pytest

from custody.tasks import cancel_and_wait, discard


async def _stubborn(swallowed: list[int]) -> None:
    # What a task looks like after Python 3.11's asyncio.wait_for lost its cancellation: it
    # carries on to its next wait, which nothing will ever end.
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        swallowed.append(1)
    await asyncio.Event().wait()


async def test_a_task_that_swallowed_its_cancellation_is_cancelled_again() -> None:
    swallowed: list[int] = []
    task = asyncio.create_task(_stubborn(swallowed), name="stubborn")
    await asyncio.sleep(0)
    # One cancel and an await would wait for ever here.
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.2)
    assert not done and swallowed == [1]

    async with asyncio.timeout(5):
        await cancel_and_wait([task], again_after_s=0.05)
    assert task.cancelled()


async def test_cancellation_lost_in_wait_for_as_its_result_arrives() -> None:
    """The very race the demo hung on: the awaited future completes in the iteration the task is
    cancelled in (on 3.11 wait_for returns the result; from 3.12 it raises as it should)."""
    loop = asyncio.get_running_loop()
    ack: asyncio.Future[None] = loop.create_future()
    link_up = asyncio.Event()  # cleared, as after the device's MQTT link was cut

    async def status_loop() -> None:
        await asyncio.wait_for(ack, timeout=10)  # the PUBACK
        await link_up.wait()

    task = asyncio.create_task(status_loop(), name="status")
    await asyncio.sleep(0)
    ack.set_result(None)
    task.cancel()
    if sys.version_info < (3, 12):  # the bug itself: one cancel does not end the task
        done, _ = await asyncio.wait({task}, timeout=0.2)
        assert not done and task.cancelling() == 1
    async with asyncio.timeout(5):
        await cancel_and_wait([task], again_after_s=0.05)
    assert task.done()


async def test_every_task_ends_and_a_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def fails_when_cancelled() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    plain = asyncio.create_task(asyncio.sleep(3600), name="plain")
    failing = asyncio.create_task(fails_when_cancelled(), name="failing")
    finished = asyncio.create_task(asyncio.sleep(0), name="finished")
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.INFO, logger="custody.tasks"):
        await cancel_and_wait([plain, failing, finished])
    assert plain.cancelled() and failing.done() and finished.done()
    assert "failing" in caplog.text and "cleanup failed" in caplog.text


async def test_a_discarded_wait_ends_without_a_never_retrieved_error() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    gone = asyncio.Event()

    async def next_message() -> None:  # as aiomqtt's iterator when the connection closes
        await gone.wait()
        raise ConnectionError("disconnected during message iteration")

    async def shielded() -> None:  # ignores the cancel, then fails: the outcome still goes nowhere
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        await gone.wait()
        raise ConnectionError("disconnected")

    plain, stubborn = asyncio.create_task(next_message()), asyncio.create_task(shielded())
    await asyncio.sleep(0)
    discard(plain)
    discard(stubborn)
    gone.set()
    await asyncio.wait({plain, stubborn})
    del plain, stubborn
    gc.collect()
    await asyncio.sleep(0)
    assert reported == []
