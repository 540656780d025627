"""A V4L2 camera and an ALSA microphone, read through PyAV's libavdevice.

Each device is read on its own thread (``ThreadFeed`` with the drop policy: a camera cannot be
paused). Frames are placed on the shared timeline by the time they are received: video on the
``1/fps`` grid, audio as a continuous sample count whose start is set by the first block's time.
The two devices run on different clocks (the sensor's, the codec's), so on a long recording the
audio may drift against the video by the crystals' difference; ``deploy/pi/smoke-test.sh``
measures what a given Pi does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping
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

Opener = Callable[..., Any]
SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")


def v4l2_options(width: int, height: int, fps: Fraction, input_format: str | None = None) -> dict[str, str]:
    """libavdevice v4l2 options asking the camera for a size, a rate and, optionally, a pixel format."""
    opts = {"video_size": f"{width}x{height}", "framerate": str(Fraction(fps))}
    if input_format:
        # e.g. "yuv420p" where the camera offers it (no conversion), or "mjpeg" for USB bandwidth.
        opts["input_format"] = input_format
    return opts


def alsa_options(rate: int, channels: int) -> dict[str, str]:
    """libavdevice alsa options."""
    return {"sample_rate": str(rate), "channels": str(channels)}


def ensure_alsa_config(env: MutableMapping[str, str] = os.environ, conf: Path = SYSTEM_ALSA_CONF) -> bool:
    """Point PyAV's bundled alsa-lib at the system's ALSA configuration; return whether it was set.

    The PyAV wheel carries its own alsa-lib built with a vendoring prefix, so it looks for
    ``/tmp/vendor/share/alsa/alsa.conf`` and, not finding it, knows no device names at all (even
    ``hw:0`` is "Unknown PCM"). ``ALSA_CONFIG_PATH`` redirects it; an explicit setting is respected.
    """
    if "ALSA_CONFIG_PATH" in env or not conf.is_file():
        return False
    env["ALSA_CONFIG_PATH"] = str(conf)
    return True


def _open_error(what: str, device: str, exc: Exception) -> MediaSourceError:
    if isinstance(exc, FileNotFoundError):
        return MediaSourceError(f"{what} {device}: no such device")
    if isinstance(exc, PermissionError):
        group = "video" if what == "camera" else "audio"
        return MediaSourceError(f"{what} {device}: permission denied (is this user in the '{group}' group?)")
    return MediaSourceError(f"{what} {device}: cannot open: {exc}")


class DeviceSource:
    """A V4L2 camera, optionally with an ALSA microphone."""

    def __init__(
        self,
        clock: Clock,
        *,
        video_device: str,
        audio_device: str | None = None,
        width: int = 1280,
        height: int = 720,
        fps: Fraction | int = 30,
        audio_rate: int = 48_000,
        audio_channels: int = 1,
        input_format: str | None = None,
        opener: Opener = av.open,
        queue_frames: int = 8,
    ) -> None:
        self._clock = clock
        self.video_device = video_device
        self.audio_device = audio_device
        self._want = VideoFormat(width, height, Fraction(fps))
        self._audio_want = AudioFormat(audio_rate, audio_channels)
        self._input_format = input_format
        self._open = opener
        self._queue_frames = queue_frames
        self._video: VideoFormat | None = None
        self._vc: Any = None
        self._ac: Any = None
        self._feed: ThreadFeed[RawFrame] | None = None

    @property
    def description(self) -> str:
        """``v4l2:DEV`` or ``v4l2:DEV+alsa:DEV``."""
        d = f"v4l2:{self.video_device}"
        return d + (f"+alsa:{self.audio_device}" if self.audio_device else "")

    @property
    def video_format(self) -> VideoFormat:
        """What the camera actually delivers (it may not grant the size or rate asked for)."""
        if self._video is None:
            raise RuntimeError("source not opened")
        return self._video

    @property
    def audio_format(self) -> AudioFormat | None:
        """The microphone's audio after conversion, or None without a microphone."""
        return self._audio_want if self.audio_device else None

    @property
    def dropped_frames(self) -> int:
        """Frames the capture threads dropped because the pipeline was behind."""
        return self._feed.dropped if self._feed else 0

    def video_options(self) -> dict[str, str]:
        """The options the camera is opened with."""
        w = self._want
        return v4l2_options(w.width, w.height, w.fps, self._input_format)

    def audio_options(self) -> dict[str, str]:
        """The options the microphone is opened with."""
        return alsa_options(self._audio_want.rate, self._audio_want.channels)

    async def open(self) -> None:
        """Open the camera (and microphone); a missing or busy device raises MediaSourceError."""
        try:
            self._vc = await asyncio.to_thread(
                self._open, self.video_device, format="v4l2", options=self.video_options()
            )
        except (av.FFmpegError, OSError) as exc:
            raise _open_error("camera", self.video_device, exc) from exc
        try:
            stream = self._vc.streams.video[0]
        except IndexError:
            self._close_containers()
            raise MediaSourceError(f"camera {self.video_device}: delivers no video stream") from None
        ctx = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or self._want.fps
        self._video = VideoFormat(even(ctx.width), even(ctx.height), Fraction(rate).limit_denominator(1001))
        if (self._video.width, self._video.height) != (self._want.width, self._want.height):
            log.warning(
                "camera %s gives %dx%d, not the %dx%d asked for",
                self.video_device,
                ctx.width,
                ctx.height,
                self._want.width,
                self._want.height,
            )
        if self.audio_device:
            ensure_alsa_config()
            try:
                self._ac = await asyncio.to_thread(
                    self._open, self.audio_device, format="alsa", options=self.audio_options()
                )
            except (av.FFmpegError, OSError) as exc:
                self._close_containers()
                raise _open_error("microphone", self.audio_device, exc) from exc

    async def frames(self) -> AsyncIterator[RawFrame]:
        """Frames from both devices as they arrive."""
        if self._vc is None:
            raise RuntimeError("source not opened")
        feed: ThreadFeed[RawFrame] = ThreadFeed(maxsize=self._queue_frames, drop_when_full=True)
        self._feed = feed
        t0 = self._clock.monotonic()
        feed.start(f"v4l2 {self.video_device}", self._video_loop(t0))
        if self._ac is not None:
            feed.start(f"alsa {self.audio_device}", self._audio_loop(t0))
        try:
            while (item := await feed.get()) is not None:
                yield item
        except (av.FFmpegError, OSError) as exc:
            raise MediaSourceError(f"{self.description}: capture failed: {exc}") from exc
        finally:
            await feed.join()
            self._close_containers()

    async def close(self) -> None:
        """Stop the capture threads; the containers close when they have."""
        if self._feed is not None:
            self._feed.stop()
        else:
            self._close_containers()

    def _video_loop(self, t0: float) -> Callable[[Callable[[RawFrame], None], threading.Event], None]:
        fmt = self.video_format
        clock, container = self._clock, self._vc
        fps = fmt.fps

        def produce(emit: Callable[[RawFrame], None], stopping: threading.Event) -> None:
            last = -1
            for frame in container.decode(video=0):
                if stopping.is_set():
                    return
                pts = round((clock.monotonic() - t0) * fps)
                if pts <= last:
                    pts = last + 1  # two frames in one slot: keep both, the timeline sorts it out
                last = pts
                emit(RawVideoFrame(to_yuv420p(frame, fmt.width, fmt.height), pts, clock.now_ms()))

        return produce

    def _audio_loop(self, t0: float) -> Callable[[Callable[[RawFrame], None], threading.Event], None]:
        rate, channels = self._audio_want.rate, self._audio_want.channels
        clock, container = self._clock, self._ac
        block = rate // 50  # 20 ms

        def produce(emit: Callable[[RawFrame], None], stopping: threading.Event) -> None:
            blocker = AudioBlocker(rate, channels, block)
            next_pts: int | None = None
            for frame in container.decode(audio=0):
                if stopping.is_set():
                    return
                for samples in blocker.push(frame):
                    if next_pts is None:
                        # The first block ended when it was received; later blocks follow on.
                        received = round((clock.monotonic() - t0) * rate) - blocker.buffered
                        next_pts = max(0, received - samples.shape[1])
                    time_ms = clock.now_ms() - (blocker.buffered + samples.shape[1]) * 1000 // rate
                    emit(RawAudioFrame(samples, next_pts, time_ms))
                    next_pts += samples.shape[1]

        return produce

    def _close_containers(self) -> None:
        for c in (self._vc, self._ac):
            if c is not None:
                try:
                    c.close()
                except (av.FFmpegError, OSError) as exc:
                    log.debug("closing %s: %s", self.description, exc)
        self._vc = self._ac = None


def describe_env(env: Mapping[str, str] = os.environ) -> str:
    """The ALSA configuration path in effect (for the smoke test's report)."""
    return env.get("ALSA_CONFIG_PATH", "(bundled default)")
