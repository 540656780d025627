"""The recorder: source -> watermark -> encoder -> chunker -> pre-event ring, driven from asyncio.

State machine (DESIGN: idle -> armed -> recording -> armed), as a table::

    idle      --arm-->     armed       (source opened, pre-event buffering)
    armed     --start-->   recording   (pre-event chunks handed on first)
    recording --stop-->    armed
    armed     --disarm-->  idle        (pre-event chunks discarded)
    armed | recording --source ended--> idle

``start_recording()`` from idle arms first (with an empty pre-event buffer);
``disarm()`` while recording stops the recording first.

Every chunk a recording consists of is passed to the ``sink`` coroutine, in order, between
``start_recording()`` being called and ``stop_recording()`` returning: pre-event chunks before
``start_recording()`` returns, the last chunk before ``stop_recording()`` returns. Pre-event chunks
that no recording claims are never passed on. The sink is awaited for each chunk before the next;
a slow sink slows the pipeline, and a live source then drops frames (counted) rather than memory
growing without bound.

Encoding runs on one worker thread (``run_in_executor``), in batches, so the event loop stays free
for MQTT and uploads; PyAV releases the GIL while encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import tzinfo
from fractions import Fraction
from typing import TypeVar

from agent.errors import AgentError, MediaSourceError
from agent.media.chunk import EncodedChunk
from agent.media.config import MediaConfig
from agent.media.encoder import DEFAULT_CANDIDATES, Probe, probe_video_encoder, select_video_encoder
from agent.media.pipeline import (
    ChunkReady,
    MediaPipeline,
    PipelineEvent,
    PipelineStats,
    RecordingClosed,
    RecordingOpened,
)
from agent.media.sources.base import MediaSource, RawFrame, RawVideoFrame
from agent.media.watermark import Watermark
from custody.clock import Clock

log = logging.getLogger(__name__)

ChunkSink = Callable[[EncodedChunk], Awaitable[None]]
_Mark = TypeVar("_Mark", RecordingOpened, RecordingClosed)

# Frames handed to the worker thread at once: amortises the hop, bounded so commands apply promptly.
_BATCH = 8


class RecorderState(enum.Enum):
    """Where the recorder is in its state machine."""

    IDLE = "idle"
    ARMED = "armed"
    RECORDING = "recording"


TRANSITIONS: dict[tuple[RecorderState, str], RecorderState] = {
    (RecorderState.IDLE, "arm"): RecorderState.ARMED,
    (RecorderState.ARMED, "start"): RecorderState.RECORDING,
    (RecorderState.RECORDING, "stop"): RecorderState.ARMED,
    (RecorderState.ARMED, "disarm"): RecorderState.IDLE,
    # Only when stopping the recording failed (the sink raised): the session ends regardless.
    (RecorderState.RECORDING, "disarm"): RecorderState.IDLE,
    (RecorderState.ARMED, "ended"): RecorderState.IDLE,
    (RecorderState.RECORDING, "ended"): RecorderState.IDLE,
}


class RecorderStateError(AgentError):
    """A command that the recorder's current state does not allow (start while recording, ...)."""


class Recorder:
    """Records from a :class:`MediaSource` into :class:`EncodedChunk` objects handed to ``sink``."""

    def __init__(
        self,
        source: MediaSource,
        config: MediaConfig,
        clock: Clock,
        sink: ChunkSink,
        *,
        device_id: str,
        officer_id: str | None = None,
        tz: tzinfo | None = None,
        encoder_candidates: Sequence[str] = DEFAULT_CANDIDATES,
        probe: Probe = probe_video_encoder,
    ) -> None:
        self.source = source
        self.config = config
        self.clock = clock
        self._sink = sink
        self.device_id = device_id
        self._officer_id = officer_id
        self._tz = tz
        self._candidates = tuple(encoder_candidates)
        self._probe = probe
        self._state = RecorderState.IDLE
        self._lock = asyncio.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pipeline: MediaPipeline | None = None
        self._watermark: Watermark | None = None
        self._video_codec: str | None = None
        self._queue: asyncio.Queue[RawFrame | None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._commands: list[str] = []
        self._opened: asyncio.Future[RecordingOpened] | None = None
        self._closed: asyncio.Future[RecordingClosed] | None = None
        self._media_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._media_ms = -1
        self._failure: BaseException | None = None
        self._disarming = False
        self.stats = PipelineStats()

    # --- public API ---------------------------------------------------------------------------

    @property
    def state(self) -> RecorderState:
        """The current state."""
        return self._state

    @property
    def video_codec(self) -> str | None:
        """The H.264 encoder chosen at the first ``arm()`` (None before)."""
        return self._video_codec

    @property
    def failure(self) -> BaseException | None:
        """Why the last session ended abnormally (source or sink error), if it did."""
        return self._failure

    def set_officer(self, officer_id: str | None) -> None:
        """Change the officer shown in the watermark from the next frame on."""
        self._officer_id = officer_id
        if self._watermark is not None:
            self._watermark.officer_id = officer_id

    async def arm(self) -> None:
        """Open the source and start pre-event buffering."""
        async with self._lock:
            await self._arm(recording=False)

    async def start_recording(self) -> RecordingOpened:
        """Start recording; returns once the pre-event chunks have gone to the sink."""
        async with self._lock:
            if self._state is RecorderState.RECORDING:
                raise RecorderStateError("already recording")
            loop = asyncio.get_running_loop()
            self._opened = loop.create_future()
            if self._state is RecorderState.IDLE:
                await self._arm(recording=True)
            else:
                self._commands.append("start")
            opened = await self._await_mark(self._opened)
            self._transition("start")
            return opened

    async def stop_recording(self) -> RecordingClosed:
        """Stop recording; returns once the recording's last chunk has gone to the sink."""
        async with self._lock:
            return await self._stop()

    async def disarm(self) -> None:
        """Stop (a recording first, if any), close the source and drop the pre-event buffer."""
        async with self._lock:
            if self._state is RecorderState.RECORDING:
                await self._stop()
            if self._state is RecorderState.IDLE:
                return
            self._disarming = True
            try:
                await self._shutdown()  # the worker's exit moves the state to idle
            finally:
                self._disarming = False

    async def wait_ended(self) -> None:
        """Wait for the source to end (a file or a time-limited synthetic source); re-raise its failure."""
        worker = self._worker
        if worker is not None:
            await asyncio.shield(worker)
        if self._failure is not None:
            raise self._failure

    @property
    def media_ms(self) -> int:
        """How much footage (ms after the source's origin) has been processed so far."""
        return max(0, self._media_ms)

    async def wait_media_ms(self, media_ms: int) -> None:
        """Wait until frames up to ``media_ms`` after the source's origin have been processed.

        Lets tests and simulators act at a point of the footage rather than of the clock.
        """
        if self._media_ms >= media_ms or self._worker is None:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._media_waiters.append((media_ms, fut))
        await fut

    # --- internals ----------------------------------------------------------------------------

    def _transition(self, event: str) -> None:
        key = (self._state, event)
        if key not in TRANSITIONS:
            raise RecorderStateError(f"cannot {event} while {self._state.value}")
        self._state = TRANSITIONS[key]
        log.info("recorder: %s -> %s (%s)", key[0].value, self._state.value, event)

    async def _arm(self, *, recording: bool) -> None:
        if self._state is not RecorderState.IDLE:
            raise RecorderStateError(f"cannot arm while {self._state.value}")
        self._failure = None
        await self.source.open()
        try:
            video, audio = self.source.video_format, self.source.audio_format
            loop = asyncio.get_running_loop()
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
            if self._video_codec is None:
                settings = self.config.video_settings(video.width, video.height, Fraction(video.fps))
                candidates = (
                    self._candidates if self.config.video_encoder == "auto" else (self.config.video_encoder,)
                )
                self._video_codec = await loop.run_in_executor(
                    self._executor, select_video_encoder, settings, candidates, self._probe
                )
            self._watermark = Watermark(
                video.width, video.height, device_id=self.device_id, officer_id=self._officer_id, tz=self._tz
            )
            codec, watermark = self._video_codec, self._watermark
            self._pipeline = await loop.run_in_executor(
                self._executor,
                lambda: MediaPipeline(
                    self.config, video, audio, video_codec=codec, watermark=watermark, recording=recording
                ),
            )
        except BaseException:
            await self.source.close()
            self._teardown_executor()
            raise
        self._media_ms = -1
        self._commands.clear()
        # Raw frames are big (1.4 MB at 720p, 3.1 MB at 1080p): a short queue absorbs jitter
        # without letting a slow encoder or sink pile up memory; a live source drops instead.
        self._queue = asyncio.Queue(maxsize=2 * _BATCH)
        self._reader = asyncio.create_task(self._read(), name="recorder-read")
        self._worker = asyncio.create_task(self._work(), name="recorder-encode")
        self._transition("arm")
        log.info(
            "armed: %s %dx%d@%s, encoder %s, chunks %d s, pre-event %d s",
            self.source.description, video.width, video.height, video.fps,
            self._video_codec, self.config.chunk_seconds, self.config.pre_event_seconds,
        )  # fmt: skip

    async def _stop(self) -> RecordingClosed:
        if self._state is not RecorderState.RECORDING:
            raise RecorderStateError("not recording")
        self._closed = asyncio.get_running_loop().create_future()
        self._commands.append("stop")
        closed = await self._await_mark(self._closed)
        if self._state is RecorderState.RECORDING:
            self._transition("stop")
        return closed

    async def _await_mark(self, fut: asyncio.Future[_Mark]) -> _Mark:
        worker = self._worker
        assert worker is not None
        waiting: set[asyncio.Future[object]] = {fut, worker}  # type: ignore[arg-type]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if fut.done():
            return fut.result()
        # The session ended first: either it failed, or the source ran out.
        if self._failure is not None:
            raise self._failure
        raise MediaSourceError(f"{self.source.description} ended before the recording could start or stop")

    async def _shutdown(self) -> None:
        reader, worker = self._reader, self._worker
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        # A reader cancelled before it ever ran has neither closed the source nor told the worker.
        with contextlib.suppress(Exception):
            await self.source.close()
        self._end_queue()
        if worker is not None:
            with contextlib.suppress(Exception):
                await worker

    def _end_queue(self) -> None:
        """Tell the worker no more frames come, dropping queued ones if there is no room."""
        queue = self._queue
        assert queue is not None
        while True:
            try:
                queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()

    async def _read(self) -> None:
        queue = self._queue
        assert queue is not None
        cancelled = False
        try:
            async for frame in self.source.frames():
                await queue.put(frame)
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as exc:
            self._failure = exc
            log.error("source %s failed: %s", self.source.description, exc)
        finally:
            with contextlib.suppress(Exception):
                await self.source.close()
            if cancelled:
                # Disarming: the frames still queued are not wanted, and a cancelled task cannot
                # wait for room.
                self._end_queue()
            else:
                await queue.put(None)

    async def _work(self) -> None:
        queue, pipeline, executor = self._queue, self._pipeline, self._executor
        assert queue is not None
        assert pipeline is not None
        assert executor is not None
        loop = asyncio.get_running_loop()
        fps = Fraction(pipeline.video.fps)
        try:
            ended = False
            while not ended:
                batch: list[RawFrame] = []
                item = await queue.get()
                while item is not None:
                    batch.append(item)
                    if len(batch) >= _BATCH or queue.empty():
                        break
                    item = queue.get_nowait()
                ended = item is None
                # Commands apply between batches, while the worker thread is not using the pipeline.
                for command in self._commands:
                    if command == "start":
                        pipeline.request_start()
                    else:
                        pipeline.request_stop()
                self._commands.clear()
                events = await loop.run_in_executor(executor, pipeline.push_many, batch)
                if ended:
                    events += await loop.run_in_executor(executor, pipeline.finish)
                self.stats = pipeline.stats
                await self._dispatch(events)
                videos = [f for f in batch if isinstance(f, RawVideoFrame)]
                if videos:
                    self._media_ms = round(videos[-1].pts * 1000 / fps)
                    self._wake_media_waiters()
        except Exception as exc:
            self._failure = exc
            log.error("recorder failed: %s", exc)
            if self._reader is not None:
                self._reader.cancel()
        finally:
            self._media_ms = 1 << 62
            self._wake_media_waiters()
            await loop.run_in_executor(executor, pipeline.close)
            self._teardown_executor()
            if self._state is not RecorderState.IDLE:
                self._transition("disarm" if self._disarming else "ended")

    async def _dispatch(self, events: list[PipelineEvent]) -> None:
        for event in events:
            if isinstance(event, ChunkReady):
                await self._sink(event.chunk)
            elif isinstance(event, RecordingOpened):
                if self._opened is not None and not self._opened.done():
                    self._opened.set_result(event)
            elif isinstance(event, RecordingClosed) and self._closed is not None and not self._closed.done():
                self._closed.set_result(event)

    def _wake_media_waiters(self) -> None:
        keep = []
        for ms, fut in self._media_waiters:
            if self._media_ms >= ms:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((ms, fut))
        self._media_waiters = keep

    def _teardown_executor(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
