"""The synchronous core of the recorder: frames in, ordered chunks and recording marks out.

timeline -> watermark -> encoder -> chunker -> (pre-event ring | out). It has no threads, no
asyncio and no clock of its own, so tests drive it frame by frame and get exact, repeatable
chunk boundaries; :class:`~agent.media.recorder.Recorder` runs it on a worker thread.

Boundaries: a chunk closes after ``chunk_seconds`` of frames, and also exactly where recording
starts or stops, so a recording's first chunk begins on the first frame after the request and
pre-event footage never shares a file with recorded footage. While armed with a pre-event buffer,
closed chunks go to the ring; when recording starts, the partial pre-event chunk closes, the ring
is emitted oldest first, then :class:`RecordingOpened`. When recording stops, the last chunk is
emitted and then :class:`RecordingClosed`. Armed without a pre-event buffer, nothing is encoded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction

from agent.media.chunk import EncodedChunk
from agent.media.chunker import Chunker, ChunkStart
from agent.media.config import MediaConfig
from agent.media.encoder import AudioSettings, MediaEncoder, Packet
from agent.media.pre_event import PreEventRing
from agent.media.sources.base import AudioFormat, RawAudioFrame, RawFrame, RawVideoFrame, VideoFormat
from agent.media.timeline import AudioTimeline, VideoTimeline
from agent.media.watermark import Watermark

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ChunkReady:
    """A chunk to hand on (pre-event chunks of a recording, then its recorded chunks)."""

    chunk: EncodedChunk


@dataclass(frozen=True, slots=True)
class RecordingOpened:
    """Recording has started: its pre-event chunks have been emitted; recorded chunks follow."""

    start_ms: int  # capture time of the first recorded (not pre-event) frame
    pre_event_chunks: int


@dataclass(frozen=True, slots=True)
class RecordingClosed:
    """Recording has stopped: every chunk of it has been emitted."""

    end_ms: int  # capture time just after its last frame
    chunks: int  # chunks emitted for it, pre-event ones included


PipelineEvent = ChunkReady | RecordingOpened | RecordingClosed


@dataclass(slots=True)
class PipelineStats:
    """Counters for status reports and tests."""

    frames_in: int = 0
    frames_encoded: int = 0
    frames_repeated: int = 0
    frames_dropped: int = 0
    audio_silence_samples: int = 0
    pre_event_evicted: int = 0
    late_audio_packets: int = 0


class MediaPipeline:
    """One encoder session: from arming (or a direct start) until the source ends or is disarmed."""

    def __init__(
        self,
        config: MediaConfig,
        video: VideoFormat,
        audio: AudioFormat | None,
        *,
        video_codec: str,
        watermark: Watermark | None,
        recording: bool = False,
    ) -> None:
        self.config = config
        self.video = video
        self._fps = Fraction(video.fps)
        audio_settings: AudioSettings | None = None
        if audio is not None and config.audio:
            base = config.audio_settings()
            assert base is not None
            # The source decides rate and channels; the config decides codec and bitrate.
            audio_settings = AudioSettings(
                codec=base.codec, rate=audio.rate, channels=audio.channels, bitrate=base.bitrate
            )
        self._encoder = MediaEncoder(
            video_codec, config.video_settings(video.width, video.height, self._fps), audio_settings
        )
        self._has_audio = audio_settings is not None
        self._chunker = Chunker(self._encoder)
        self._ring = PreEventRing(config.pre_event_seconds * 1000, config.pre_event_bytes_cap())
        self._vt = VideoTimeline(self._fps)
        self._at = AudioTimeline(audio.rate, audio.channels) if audio_settings and audio else None
        self._watermark = watermark
        self._chunk_frames = config.chunk_frames(self._fps)
        # A session started straight into recording applies the start on its first frame.
        self._recording = False
        self._pending: str | None = "start" if recording else None
        self._recording_start_ms = 0
        self._frames_in_chunk = 0
        self._flush_marker: ChunkStart | None = None
        self._stop_marker: ChunkStart | None = None
        self._chunks_in_recording = 0
        self._last_end_ms = 0
        self.stats = PipelineStats()

    @property
    def video_codec(self) -> str:
        """The encoder in use (``libx264``, ``h264_v4l2m2m``)."""
        return self._encoder.video_codec

    @property
    def recording(self) -> bool:
        """Whether frames now go into recorded (not pre-event) chunks."""
        return self._recording

    @property
    def ring(self) -> PreEventRing:
        """The pre-event ring (read-only use)."""
        return self._ring

    def request_start(self) -> None:
        """Start recording at the next video frame."""
        if self._recording or self._pending == "start":
            raise RuntimeError("already recording")
        self._pending = "start"

    def request_stop(self) -> None:
        """Stop recording after the current frame (the next frame no longer belongs to it)."""
        if not self._recording or self._pending == "stop":
            raise RuntimeError("not recording")
        self._pending = "stop"

    def push_many(self, frames: Iterable[RawFrame]) -> list[PipelineEvent]:
        """Push several frames; return the events in order."""
        events: list[PipelineEvent] = []
        for frame in frames:
            events += self.push(frame)
        return events

    def push(self, frame: RawFrame) -> list[PipelineEvent]:
        """Push one captured frame; return the events it caused."""
        if isinstance(frame, RawVideoFrame):
            self.stats.frames_in += 1
            events: list[PipelineEvent] = []
            placed = self._vt.place(frame)
            self.stats.frames_repeated = self._vt.duplicated
            self.stats.frames_dropped = self._vt.dropped
            for f, repeated in placed:
                events += self._video(f, repeated)
            return events
        return self._audio(frame)

    def finish(self) -> list[PipelineEvent]:
        """End the session: flush the encoder and emit what is left of a recording."""
        was_recording = self._recording
        if was_recording:
            self._stop_marker = self._chunker.open_start
            self._recording = False
        self._pending = None
        closed = self._chunker.add(self._encoder.flush()) + self._chunker.finish()
        events = self._route(closed)
        if was_recording and not any(isinstance(e, RecordingClosed) for e in events):
            events.append(self._closed())
        self._ring.clear()
        return events

    def close(self) -> None:
        """Release the encoder; open chunks are discarded."""
        self._chunker.abort()
        self._encoder.close()

    def _video(self, frame: RawVideoFrame, repeated: bool) -> list[PipelineEvent]:
        events: list[PipelineEvent] = []
        boundary = self._boundary(frame, events)
        if boundary is not None:
            self._chunker.begin(boundary)
            self._frames_in_chunk = 0
        if self._chunker.open_start is None:
            return events  # armed without a pre-event buffer: nothing to keep
        if not repeated and self._watermark is not None:
            self._watermark.apply(frame.image, frame.time_ms)
        packets = self._encoder.encode_video(frame.image, frame.pts, keyframe=boundary is not None)
        self.stats.frames_encoded += 1
        self._frames_in_chunk += 1
        return events + self._emit(packets)

    def _boundary(self, frame: RawVideoFrame, events: list[PipelineEvent]) -> ChunkStart | None:
        """The chunk ``frame`` starts, if it starts one; applies a pending start or stop."""
        open_start = self._chunker.open_start
        if self._pending == "start":
            self._pending = None
            self._recording = True
            self._chunks_in_recording = 0
            self._recording_start_ms = frame.time_ms
            if open_start is not None:
                self._flush_marker = open_start  # the recording opens once this chunk has closed
            else:
                events += self._opened()
            return ChunkStart(frame.pts, frame.time_ms, pre_event=False, with_audio=self._has_audio)
        if self._pending == "stop":
            self._pending = None
            self._recording = False
            self._stop_marker = open_start
            if self._ring.enabled:
                return self._start(frame, pre_event=True)
            self._chunker.end(frame.pts)
            return None
        if open_start is None:
            if self._recording or self._ring.enabled:
                return self._start(frame, pre_event=not self._recording)
            return None
        if self._frames_in_chunk >= self._chunk_frames:
            return self._start(frame, pre_event=not self._recording)
        return None

    def _start(self, frame: RawVideoFrame, *, pre_event: bool) -> ChunkStart:
        with_audio = self._has_audio and (not pre_event or self.config.pre_event_audio)
        return ChunkStart(frame.pts, frame.time_ms, pre_event=pre_event, with_audio=with_audio)

    def _audio(self, frame: RawAudioFrame) -> list[PipelineEvent]:
        if self._at is None:
            return []
        events: list[PipelineEvent] = []
        for block in self._at.place(frame):
            events += self._emit(self._encoder.encode_audio(block.samples, block.pts))
        self.stats.audio_silence_samples = self._at.silence_samples
        return events

    def _emit(self, packets: list[Packet]) -> list[PipelineEvent]:
        if not packets:
            return []
        return self._route(self._chunker.add(packets))

    def _route(self, closed: list[tuple[EncodedChunk, ChunkStart]]) -> list[PipelineEvent]:
        events: list[PipelineEvent] = []
        for chunk, start in closed:
            self.stats.late_audio_packets = self._chunker.late_audio_packets
            if start.pre_event:
                dropped = self._ring.add(chunk)
                self.stats.pre_event_evicted += len(dropped)
                if start is self._flush_marker:
                    self._flush_marker = None
                    events += self._opened()
                continue
            events.append(ChunkReady(chunk))
            self._chunks_in_recording += 1
            self._last_end_ms = chunk.end_ms
            if start is self._stop_marker:
                self._stop_marker = None
                events.append(self._closed())
        return events

    def _opened(self) -> list[PipelineEvent]:
        chunks = self._ring.drain()
        self._chunks_in_recording = len(chunks)
        if chunks:
            self._last_end_ms = chunks[-1].end_ms
        events: list[PipelineEvent] = [ChunkReady(c) for c in chunks]
        events.append(RecordingOpened(self._recording_start_ms, len(chunks)))
        return events

    def _closed(self) -> RecordingClosed:
        return RecordingClosed(self._last_end_ms, self._chunks_in_recording)
