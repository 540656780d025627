"""The async recorder: state machine, ordering of chunks towards the sink, failures, and that
encoding stays off the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from agent.errors import EncoderUnavailableError, MediaSourceError
from agent.media.chunk import EncodedChunk
from agent.media.chunk_check import check_chunk
from agent.media.config import MediaConfig
from agent.media.encoder import VideoSettings
from agent.media.recorder import Recorder, RecorderState, RecorderStateError
from agent.media.sources.base import AudioFormat, RawFrame, VideoFormat
from agent.media.sources.synthetic import SyntheticSource
from custody.clock import FakeClock, SystemClock

from .recording import CST, H, W, small_config


class Sink:
    def __init__(self) -> None:
        self.chunks: list[EncodedChunk] = []

    async def __call__(self, chunk: EncodedChunk) -> None:
        self.chunks.append(chunk)


def state_of(rec: Recorder) -> RecorderState:
    # A call, so the type checker does not narrow the state across awaits that change it.
    return rec.state


def make(
    seconds: float | None = 30, config: MediaConfig | None = None, **kwargs: object
) -> tuple[Recorder, Sink]:
    clock = FakeClock(auto_advance=True)
    sink = Sink()
    source = SyntheticSource(clock, width=W, height=H, seconds=seconds)
    rec = Recorder(source, config or small_config(), clock, sink, device_id="dev-test", tz=CST, **kwargs)  # type: ignore[arg-type]
    return rec, sink


async def test_arm_record_stop_hands_on_pre_event_then_recorded_chunks_in_order():
    rec, sink = make()
    assert state_of(rec) is RecorderState.IDLE
    await rec.arm()
    assert state_of(rec) is RecorderState.ARMED
    assert rec.video_codec == "libx264"
    await rec.wait_media_ms(6_500)
    assert sink.chunks == []  # pre-event footage stays in memory until a recording claims it
    opened = await rec.start_recording()
    assert state_of(rec) is RecorderState.RECORDING
    assert opened.pre_event_chunks >= 2
    assert len(sink.chunks) == opened.pre_event_chunks  # delivered before start_recording returned
    assert all(c.pre_event for c in sink.chunks)
    await rec.wait_media_ms(11_000)
    closed = await rec.stop_recording()
    assert state_of(rec) is RecorderState.ARMED
    assert len(sink.chunks) == closed.chunks  # the last chunk arrived before stop_recording returned
    assert closed.end_ms == sink.chunks[-1].end_ms
    recorded = [c for c in sink.chunks if not c.pre_event]
    assert recorded[0].start_ms == opened.start_ms
    assert sum(c.duration_ms for c in recorded) == pytest.approx(closed.end_ms - opened.start_ms, abs=2)
    starts = [c.start_ms for c in sink.chunks]
    assert starts == sorted(starts)
    await rec.wait_media_ms(14_000)
    await rec.disarm()
    assert state_of(rec) is RecorderState.IDLE
    assert len(sink.chunks) == closed.chunks  # pre-event footage after the stop was discarded
    for c in sink.chunks:
        assert check_chunk(c.data).first_frame_keyframe


async def test_start_from_idle_arms_first_with_no_pre_event_footage():
    rec, sink = make(seconds=5)
    opened = await rec.start_recording()
    assert opened.pre_event_chunks == 0
    await rec.wait_ended()
    assert state_of(rec) is RecorderState.IDLE
    assert [c.pre_event for c in sink.chunks] == [False, False, False]
    assert sum(c.video_frames for c in sink.chunks) == 150


async def test_commands_the_state_does_not_allow_are_refused():
    rec, _ = make()
    with pytest.raises(RecorderStateError, match="not recording"):
        await rec.stop_recording()
    await rec.start_recording()
    with pytest.raises(RecorderStateError, match="already recording"):
        await rec.start_recording()
    with pytest.raises(RecorderStateError, match="cannot arm while recording"):
        await rec.arm()
    await rec.disarm()  # stops the recording first
    assert state_of(rec) is RecorderState.IDLE


async def test_disarm_while_recording_delivers_the_last_chunk():
    rec, sink = make()
    await rec.start_recording()
    await rec.wait_media_ms(3_000)
    await rec.disarm()
    assert state_of(rec) is RecorderState.IDLE
    assert sum(c.video_frames for c in sink.chunks) >= 90
    assert not sink.chunks[-1].pre_event


async def test_the_recorder_can_be_armed_again_after_disarming():
    rec, sink = make(seconds=None)
    for _ in range(2):
        await rec.start_recording()
        await rec.wait_media_ms(1_000)
        await rec.stop_recording()
        await rec.disarm()
    assert len(sink.chunks) == 2


async def test_source_ending_while_recording_closes_the_recording():
    rec, sink = make(seconds=3)
    await rec.start_recording()
    await rec.wait_ended()
    assert state_of(rec) is RecorderState.IDLE
    assert sum(c.video_frames for c in sink.chunks) == 90
    with pytest.raises(RecorderStateError):
        await rec.stop_recording()


class FailingSource:
    """Gives a second of frames, then fails like an unplugged camera."""

    def __init__(self) -> None:
        self._inner = SyntheticSource(FakeClock(auto_advance=True), width=W, height=H, seconds=1)

    description = "v4l2:/dev/video0"

    @property
    def video_format(self) -> VideoFormat:
        return self._inner.video_format

    @property
    def audio_format(self) -> AudioFormat | None:
        return self._inner.audio_format

    async def open(self) -> None:
        self.closed = False

    async def frames(self) -> AsyncIterator[RawFrame]:
        async for f in self._inner.frames():
            yield f
        raise MediaSourceError("v4l2:/dev/video0: capture failed: device unplugged")

    async def close(self) -> None:
        self.closed = True


async def test_a_source_failure_ends_the_session_and_is_reported():
    source = FailingSource()
    sink = Sink()
    clock = FakeClock(auto_advance=True)
    rec = Recorder(source, small_config(), clock, sink, device_id="d")
    await rec.start_recording()
    with pytest.raises(MediaSourceError, match="device unplugged"):
        await rec.wait_ended()
    assert state_of(rec) is RecorderState.IDLE
    assert source.closed
    assert sum(c.video_frames for c in sink.chunks) == 30  # what was captured is still handed on
    assert isinstance(rec.failure, MediaSourceError)


async def test_a_sink_failure_stops_the_recorder_and_surfaces():
    rec, _ = make()

    async def broken(chunk: EncodedChunk) -> None:
        raise OSError("disk full")

    rec._sink = broken
    await rec.start_recording()
    with pytest.raises(OSError, match="disk full"):
        await rec.stop_recording()
    assert state_of(rec) is RecorderState.IDLE


async def test_no_working_encoder_leaves_the_recorder_idle_with_a_clear_error():
    def nothing_works(codec: str, settings: VideoSettings) -> None:
        raise EncoderUnavailableError(f"{codec} cannot open")

    rec, _ = make(probe=nothing_works)
    with pytest.raises(EncoderUnavailableError, match=r"no working H\.264 encoder"):
        await rec.arm()
    assert state_of(rec) is RecorderState.IDLE


async def test_a_configured_encoder_is_used_without_trying_others():
    probed: list[str] = []

    def probe(codec: str, settings: VideoSettings) -> None:
        probed.append(codec)

    rec, _ = make(seconds=1, config=small_config(video_encoder="libx264"), probe=probe)
    await rec.start_recording()
    await rec.wait_ended()
    assert probed == ["libx264"]


async def test_officer_change_reaches_the_watermark():
    rec, _ = make()
    await rec.arm()
    rec.set_officer("110105")
    assert rec._watermark is not None
    assert rec._watermark.lines(0)[1].endswith("OFC 110105")
    await rec.disarm()


async def test_encoding_does_not_block_the_event_loop():
    """Real time, 640x480: a heartbeat task must keep ticking while the recorder encodes."""
    clock = SystemClock()
    sink = Sink()
    source = SyntheticSource(clock, width=640, height=480, seconds=1.5)
    rec = Recorder(source, small_config(width=640, height=480), clock, sink, device_id="d")
    lags: list[float] = []
    stop = asyncio.Event()

    async def heartbeat() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lags.append(time.perf_counter() - t - 0.01)

    beat = asyncio.create_task(heartbeat())
    await rec.start_recording()
    await rec.wait_ended()
    stop.set()
    await beat
    assert sum(c.video_frames for c in sink.chunks) == 45
    assert len(lags) > 50
    assert max(lags) < 0.1, f"event loop stalled for {max(lags) * 1000:.0f} ms"
