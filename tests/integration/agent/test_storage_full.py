"""Storage full on a real small file system: recording stops with an alarm, nothing recorded is deleted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.device import DeviceAgent
from agent.media.config import MediaConfig
from custody.clock import FakeClock
from protocol.chain import verify_chain
from protocol.envelope import Envelope
from protocol.messages import RecordingEvent, parse_entry

pytestmark = pytest.mark.integration


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (the test runs as root, as `make test` does on CI)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    assert result.returncode == 0, f"cannot mount a tmpfs (run the suite as root): {result.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_disk_stops_recording_and_keeps_every_chunk(small_fs: Path) -> None:
    clock = FakeClock(time.time_ns() // 1_000_000, auto_advance=True)
    media = MediaConfig(width=320, height=240, chunk_seconds=1, pre_event_seconds=0, video_bitrate=2_000_000)
    agent = DeviceAgent(small_fs / "device", clock, media=media, source_seconds=600, reserve_bytes=512 * 1024)
    await agent.open()
    await agent.start_recording()
    recorder = agent.recorder
    assert recorder is not None
    seen: set[str] = set()
    # Keep recording until the buffer refuses: each chunk is about 250 kB on a 4 MiB file system.
    for second in range(1, 120):
        with contextlib.suppress(Exception):
            await recorder.wait_media_ms(second * 1000)
        seen |= {p.name for p in (small_fs / "device" / "buffer").glob("*.chunk")}
        if "storage_full" in agent.alarms:
            break
    # The agent closes the recording (stop event) as soon as the buffer refused a chunk.
    for _ in range(500):
        if agent.recording_id is None:
            break
        await asyncio.sleep(0.01)
    assert agent.recording_id is None, "recording should have stopped when the disk filled"
    assert "storage_full" in agent.status().alarms
    # Nothing that was committed has been deleted (no receipt exists for any of it).
    on_disk = {p.name for p in (small_fs / "device" / "buffer").glob("*.chunk")}
    assert seen <= on_disk
    assert len(on_disk) >= 5
    envelopes = [agent.buffer.read(e.seq)[1] for e in agent.buffer.entries()]
    assert verify_chain(envelopes, agent.key.public).ok
    last = parse_entry(Envelope.from_bytes(envelopes[-1]))
    assert isinstance(last, RecordingEvent)
    assert (last.event, last.reason) == ("stop", "storage-full")
    # A new recording is refused while the alarm stands.
    with pytest.raises(Exception, match="storage full"):
        await agent.start_recording()
    assert os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize < 2 * 1024 * 1024
    await agent.close()
