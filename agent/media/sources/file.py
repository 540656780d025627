"""A media file replayed at real time, as if a camera were filming it (demos, simulators, tests).

The file is decoded on a thread (``ThreadFeed`` with the block policy: a file can wait), and each
frame is released when the clock reaches its time, so a replay takes as long as the file, or no
time at all under a fake clock with auto-advance. Video is placed on the constant-rate grid of the
file's average frame rate; audio is converted to int16 at the configured rate and layout.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from agent.errors import MediaSourceError
from agent.media.sources.base import AudioFormat, RawAudioFrame, RawFrame, RawVideoFrame, VideoFormat
from agent.media.sources.convert import AudioBlocker, even, to_yuv420p
from agent.media.sources.threads import ThreadFeed
from custody.clock import Clock

log = logging.getLogger(__name__)

DEFAULT_FPS = Fraction(30)


class FileSource:
    """Replays ``path`` once at the pace of ``clock``."""

    def __init__(
        self,
        clock: Clock,
        path: str | Path,
        *,
        audio_rate: int = 48_000,
        audio_channels: int = 1,
        with_audio: bool = True,
    ) -> None:
        self._clock = clock
        self.path = Path(path)
        self._audio_want = AudioFormat(audio_rate, audio_channels)
        self._with_audio = with_audio
        self._container: Any = None
        self._video: VideoFormat | None = None
        self._has_audio = False
        self._feed: ThreadFeed[RawFrame] | None = None
        self._closed = False

    @property
    def description(self) -> str:
        """``file:PATH``."""
        return f"file:{self.path}"

    @property
    def video_format(self) -> VideoFormat:
        """The file's size (rounded down to even) and average frame rate."""
        if self._video is None:
            raise RuntimeError("source not opened")
        return self._video

    @property
    def audio_format(self) -> AudioFormat | None:
        """The configured audio format if the file has sound (and audio is wanted)."""
        return self._audio_want if self._has_audio else None

    async def open(self) -> None:
        """Open the file; a missing file or one without video raises MediaSourceError."""
        if not self.path.is_file():
            raise MediaSourceError(f"file {self.path}: not found")
        try:
            self._container = await asyncio.to_thread(av.open, str(self.path))
        except (av.FFmpegError, OSError) as exc:
            raise MediaSourceError(f"file {self.path}: not a media file that can be read ({exc})") from exc
        if not self._container.streams.video:
            self._container.close()
            raise MediaSourceError(f"file {self.path}: has no video stream")
        vs = self._container.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or DEFAULT_FPS
        self._video = VideoFormat(
            even(vs.codec_context.width),
            even(vs.codec_context.height),
            Fraction(rate).limit_denominator(1001),
        )
        self._has_audio = self._with_audio and bool(self._container.streams.audio)
        self._closed = False

    async def frames(self) -> AsyncIterator[RawFrame]:
        """The file's frames, each released at its time on the clock."""
        if self._container is None:
            raise RuntimeError("source not opened")
        feed: ThreadFeed[RawFrame] = ThreadFeed(maxsize=32, drop_when_full=False)
        self._feed = feed
        start_ms = self._clock.now_ms()
        t0 = self._clock.monotonic()
        fps = self.video_format.fps
        rate = self._audio_want.rate
        feed.start(f"file {self.path.name}", self._decode_loop(start_ms))
        try:
            while not self._closed and (item := await feed.get()) is not None:
                media_s = item.pts / fps if isinstance(item, RawVideoFrame) else Fraction(item.pts, rate)
                wait = t0 + float(media_s) - self._clock.monotonic()
                if wait > 0:
                    await self._clock.sleep(wait)
                yield item
        except (av.FFmpegError, OSError) as exc:
            raise MediaSourceError(f"file {self.path}: cannot be decoded: {exc}") from exc
        finally:
            await feed.join()
            self._close_container()

    async def close(self) -> None:
        """Stop the replay."""
        self._closed = True
        if self._feed is not None:
            self._feed.stop()
        else:
            self._close_container()

    def _decode_loop(self, start_ms: int) -> Callable[[Callable[[RawFrame], None], threading.Event], None]:
        container = self._container
        fmt = self.video_format
        fps = fmt.fps
        rate, channels = self._audio_want.rate, self._audio_want.channels
        streams = [container.streams.video[0]]
        if self._has_audio:
            streams.append(container.streams.audio[0])

        def produce(emit: Callable[[RawFrame], None], stopping: threading.Event) -> None:
            origin: float | None = None  # time of the first video frame: media time zero
            last_v = -1
            blocker = AudioBlocker(rate, channels, rate // 50)
            next_a: int | None = None
            for packet in container.demux(*streams):
                for frame in packet.decode():
                    if stopping.is_set():
                        return
                    if isinstance(frame, av.VideoFrame):
                        t = frame.time if frame.time is not None else (last_v + 1) / fps
                        if origin is None:
                            origin = float(t)
                        pts = round((float(t) - origin) * fps)
                        if pts <= last_v:
                            continue  # a frame in a slot already filled (VFR file): drop it
                        last_v = pts
                        time_ms = start_ms + round(pts * 1000 / fps)
                        emit(RawVideoFrame(to_yuv420p(frame, fmt.width, fmt.height), pts, time_ms))
                    elif isinstance(frame, av.AudioFrame):
                        if origin is None:
                            continue  # sound before the first picture has no place on the timeline
                        blocks = blocker.push(frame)
                        if blocks and next_a is None:
                            t_a = float(frame.time) if frame.time is not None else origin
                            next_a = max(0, round((t_a - origin) * rate))
                        for samples in blocks:
                            assert next_a is not None
                            emit(RawAudioFrame(samples, next_a, start_ms + next_a * 1000 // rate))
                            next_a += samples.shape[1]
            rest = blocker.flush() if next_a is not None else None
            if rest is not None and next_a is not None:
                emit(RawAudioFrame(rest, next_a, start_ms + next_a * 1000 // rate))  # the file's last samples

        return produce

    def _close_container(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except (av.FFmpegError, OSError) as exc:
                log.debug("closing %s: %s", self.path, exc)
            self._container = None
