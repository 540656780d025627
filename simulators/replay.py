"""Replay mode: pre-encoded chunks handed to the agent's own classes, so hundreds of devices fit on one machine.

Encoding is what a real device spends its CPU on; a fleet simulation wants the rest (signing,
the crash-safe buffer, MQTT, uploads, commands) at scale. :class:`ReplayRecorder` stands where
the real recorder stands in :class:`agent.device.DeviceAgent` and hands on copies of a few
pre-encoded chunks on the simulated clock. Each copy is made unique (an MP4 ``free`` box with
the device id and a counter appended at the top level, which players ignore), so every replayed
chunk has its own SHA-256; signing and verification are never skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from functools import lru_cache

import numpy as np

from agent.media.chunk import EncodedChunk
from agent.media.config import MediaConfig
from agent.media.encoder import select_video_encoder
from agent.media.pipeline import ChunkReady, MediaPipeline
from agent.media.recorder import ChunkSink, RecorderState
from agent.media.sources.base import RawVideoFrame
from agent.media.sources.synthetic import SyntheticSource
from agent.media.watermark import Watermark
from custody.clock import Clock, FakeClock


def unique_copy(chunk: EncodedChunk, tag: bytes, start_ms: int) -> EncodedChunk:
    """``chunk`` with a top-level ``free`` box holding ``tag`` appended: same media, different bytes."""
    box = struct.pack(">I4s", 8 + len(tag), b"free") + tag
    return replace(chunk, data=chunk.data + box, start_ms=start_ms)


@lru_cache(maxsize=8)
def templates(width: int = 640, height: int = 360, bitrate: int = 1_000_000, chunk_seconds: int = 5,
              count: int = 3, noise: int = 0) -> tuple[EncodedChunk, ...]:
    """A few real chunks of synthetic footage (encoded once per process and shared by the fleet).

    The synthetic pattern alone compresses to about half of ``bitrate``; ``noise`` adds that much
    random sensor-like noise to every pixel (seeded, so the same every run), which makes the
    encoder spend the whole bitrate as a camera's picture does (12 gives chunks of about
    ``bitrate`` x ``chunk_seconds``).
    """
    config = MediaConfig(width=width, height=height, chunk_seconds=chunk_seconds, pre_event_seconds=0,
                         video_bitrate=bitrate, x264_preset="ultrafast")
    src = SyntheticSource(FakeClock(), width=width, height=height, fps=config.fps)
    codec = select_video_encoder(config.video_settings(width, height, Fraction(config.fps)), ["libx264"])
    wm = Watermark(width, height, device_id="replay-template", officer_id=None)
    pipeline = MediaPipeline(config, src.video_format, src.audio_format, video_codec=codec, watermark=wm,
                             recording=True)
    out: list[EncodedChunk] = []
    frames = int(config.fps * chunk_seconds) * count
    start_ms = 1_767_225_600_000
    rng = np.random.default_rng(7)
    events = []
    for n in range(frames):
        frame = src.video_frame(n, start_ms)
        if noise:
            img = np.clip(frame.image.astype(np.int16) + rng.integers(-noise, noise + 1, frame.image.shape), 16, 235)
            frame = RawVideoFrame(img.astype(np.uint8), frame.pts, frame.time_ms)
        events += pipeline.push(frame)
        events += pipeline.push(src.audio_block(n, start_ms))
    events += pipeline.finish()
    pipeline.close()
    out = [e.chunk for e in events if isinstance(e, ChunkReady)]
    full = [c for c in out if c.duration_ms == chunk_seconds * 1000]
    return tuple(full or out)


class ReplayRecorder:
    """A recorder that replays pre-encoded chunks on the simulated clock (see module docstring)."""

    def __init__(self, chunks: Sequence[EncodedChunk], clock: Clock, sink: ChunkSink, device_id: str) -> None:
        if not chunks:
            raise ValueError("replay needs at least one chunk")
        self.chunks = list(chunks)
        self.clock = clock
        self.sink = sink
        self.device_id = device_id
        self._state = RecorderState.IDLE
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_sink = False
        self._counter = 0
        self._media_ms = 0
        #: Chunks committed by the sink (closed on the device) since this recorder was made.
        self.closed = 0
        #: For each of them, how long after its scheduled close the commit returned (ms of the clock): a
        #: fleet that cannot keep up commits late, which a camera would not.
        self.commit_lag_ms: list[float] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.failure: BaseException | None = None

    @property
    def state(self) -> RecorderState:
        """idle, armed or recording."""
        return self._state

    def set_officer(self, officer_id: str | None) -> None:
        """Replayed footage has its watermark burnt in already."""

    async def arm(self) -> None:
        """Nothing to open."""
        if self._state is RecorderState.IDLE:
            self._state = RecorderState.ARMED

    async def start_recording(self) -> None:
        """Start handing on chunks, one per chunk length of simulated time."""
        self._state = RecorderState.RECORDING
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"replay-{self.device_id}")

    async def _run(self) -> None:
        try:
            # Chunks close on a fixed schedule from the start, as a camera's do (its encoder runs on
            # whatever the commit costs): sleeping a whole chunk length after each commit would let
            # the commit time add up, and a fleet under load would quietly produce less footage.
            due = self.clock.monotonic()
            while not self._stopping:
                template = self.chunks[self._counter % len(self.chunks)]
                due += template.duration_ms / 1000
                await self.clock.sleep(due - self.clock.monotonic())
                if self._stopping:
                    break
                tag = f"custody-replay {self.device_id} {self._counter}".encode()
                self._counter += 1
                self._in_sink = True
                try:
                    await self.sink(unique_copy(template, tag, self.clock.now_ms() - template.duration_ms))
                finally:
                    self._in_sink = False
                self.closed += 1
                self.commit_lag_ms.append(max(0.0, self.clock.monotonic() - due) * 1000)
                self._media_ms += template.duration_ms
                self._wake()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the sink refused (storage full...): the recording ends
            self.failure = exc
            self._state = RecorderState.ARMED
            self._wake(force=True)

    def _wake(self, force: bool = False) -> None:
        for ms, fut in list(self._waiters):
            if (force or self._media_ms >= ms) and not fut.done():
                fut.set_result(None)
                self._waiters.remove((ms, fut))

    async def stop_recording(self) -> None:
        """Stop; a chunk being committed is finished first, a wait for the next one is cut short."""
        self._stopping = True
        task = self._task
        if task is not None:
            if not self._in_sink:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._wake(force=True)  # nobody waits for footage that will not come
        if self._state is RecorderState.RECORDING:
            self._state = RecorderState.ARMED

    async def disarm(self) -> None:
        """Stop and go idle."""
        await self.stop_recording()
        self._state = RecorderState.IDLE

    @property
    def media_ms(self) -> int:
        """Footage handed on since this recorder was made, in ms."""
        return self._media_ms

    async def wait_media_ms(self, media_ms: int) -> None:
        """Wait until ``media_ms`` of footage has been handed on (or the recording ended)."""
        if self._media_ms >= media_ms or self._task is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((media_ms, fut))
        await fut
