"""Small synthetic recordings driven frame by frame, shared by the agent media tests."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import timedelta, timezone
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

from agent.media.chunk import EncodedChunk
from agent.media.chunker import Chunker, ChunkStart
from agent.media.config import MediaConfig
from agent.media.encoder import AudioSettings, MediaEncoder, VideoSettings
from agent.media.pipeline import ChunkReady, MediaPipeline, PipelineEvent, RecordingClosed, RecordingOpened
from agent.media.sources.synthetic import SyntheticSource
from agent.media.watermark import Watermark
from custody.clock import FakeClock

W, H, FPS = 320, 240, 30
START_MS = 1_767_225_600_000
CST = timezone(timedelta(hours=8))
RECORD_FROM, RECORD_TO = 125, 350


def small_config(**overrides: object) -> MediaConfig:
    base: dict[str, object] = {
        "width": W,
        "height": H,
        "chunk_seconds": 2,
        "pre_event_seconds": 3,
        "video_bitrate": 400_000,
        "audio_bitrate": 32_000,
    }
    base.update(overrides)
    return MediaConfig(**base)  # type: ignore[arg-type]


@dataclass
class Run:
    events: list[PipelineEvent] = field(default_factory=list)
    pipeline: MediaPipeline | None = None

    @property
    def chunks(self) -> list[EncodedChunk]:
        return [e.chunk for e in self.events if isinstance(e, ChunkReady)]

    @property
    def opened(self) -> list[RecordingOpened]:
        return [e for e in self.events if isinstance(e, RecordingOpened)]

    @property
    def closed(self) -> list[RecordingClosed]:
        return [e for e in self.events if isinstance(e, RecordingClosed)]


def run_pipeline(
    config: MediaConfig,
    frames: int,
    *,
    start_at: tuple[int, ...] = (),
    stop_at: tuple[int, ...] = (),
    recording: bool = False,
    audio: bool = True,
    watermark: bool = True,
) -> Run:
    """Push ``frames`` synthetic frames (and their audio); request starts/stops before the given frames."""
    src = SyntheticSource(FakeClock(), width=config.width, height=config.height, fps=config.fps,
                          audio_rate=config.audio_rate if audio else None)  # fmt: skip
    wm = None
    if watermark:
        wm = Watermark(config.width, config.height, device_id="dev-test", officer_id="007", tz=CST)
    p = MediaPipeline(config, src.video_format, src.audio_format, video_codec="libx264", watermark=wm,
                      recording=recording)  # fmt: skip
    run = Run(pipeline=p)
    for n in range(frames):
        if n in start_at:
            p.request_start()
        if n in stop_at:
            p.request_stop()
        run.events += p.push(src.video_frame(n, START_MS))
        if audio:
            run.events += p.push(src.audio_block(n, START_MS))
    run.events += p.finish()
    p.close()
    return run


def standard_run() -> Run:
    """14 s armed with a 3 s pre-event buffer; record from frame 125 (4.167 s) to frame 350 (11.667 s)."""
    return run_pipeline(small_config(), 14 * FPS, start_at=(RECORD_FROM,), stop_at=(RECORD_TO,))


def moov_last_chunk(frames: int = 30) -> bytes:
    """A one-chunk recording as FFmpeg writes it to memory (moov after mdat, no fast start)."""
    enc = MediaEncoder("libx264", VideoSettings(W, H, Fraction(FPS), frames, 400_000), AudioSettings())
    chunker = Chunker(enc, fast_start=False)
    src = SyntheticSource(FakeClock(), width=W, height=H)
    chunker.begin(ChunkStart(0, START_MS, pre_event=False, with_audio=True))
    for n in range(frames):
        chunker.add(enc.encode_video(src.video_frame(n, START_MS).image, n, keyframe=n == 0))
        block = src.audio_block(n, START_MS)
        chunker.add(enc.encode_audio(block.samples, block.pts))
    chunker.add(enc.flush())
    ((chunk, _),) = chunker.finish()
    enc.close()
    return chunk.data


def first_frame_luma(data: bytes) -> npt.NDArray[np.uint8]:
    """The Y plane of a chunk's first frame."""
    with av.open(io.BytesIO(data), "r") as c:
        frame = next(c.decode(video=0))
        return np.asarray(frame.to_ndarray(), dtype=np.uint8)[: frame.height]
