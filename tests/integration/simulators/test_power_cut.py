"""A power cut in the middle of a simulated recording ends that recording; it is not an error.

The recorder may commit one more chunk while the cut is being made; the buffer refuses it
("abandoned"), which wakes the scenario's record step while the cut agent still calls the
recording its own. The step then tried to write the stop event into the dead buffer and reported
the refusal as a scenario error: the demo ended with an unexpected outcome about one run in nine.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agent.buffer import ChunkBuffer
from custody.clock import ScaledClock
from simulators.fleet import DeviceSpec, SimulatedDevice

pytestmark = pytest.mark.integration


async def test_a_chunk_committed_during_the_cut_ends_the_recording_quietly(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ScaledClock(200.0, 1_767_225_600_000)  # a 5 s chunk every 25 ms of real time
    dev = SimulatedDevice(DeviceSpec("cam"), tmp_path, clock)
    await dev.open(None, mqtt=False)
    record = asyncio.create_task(dev.record(600, reason="test"))
    agent = dev.agent
    while agent.buffer.head_seq is None or agent.buffer.head_seq < 2:
        await asyncio.sleep(0.01)

    abandon = ChunkBuffer.abandon

    def slow_abandon(buffer: ChunkBuffer) -> None:
        # The cut takes a moment, as a commit in flight makes it wait: the recorder's next chunk
        # arrives meanwhile and is refused.
        abandon(buffer)
        time.sleep(0.2)

    monkeypatch.setattr(ChunkBuffer, "abandon", slow_abandon)
    await agent.crash()
    async with asyncio.timeout(10):
        recording_id = await record  # before the fix: AgentError "this buffer was abandoned"
    assert recording_id.startswith("rec-")
    assert agent.buffer.abandoned and agent.recording_id is None
