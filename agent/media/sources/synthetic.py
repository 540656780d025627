"""A synthetic camera and microphone: a moving test pattern with burnt-in counters, and a tone.

It lives in agent/ (not tests/) so an installed device can record through its real encoder
without a camera (``custody agent record --source synthetic``, the Pi smoke test), and so
simulators can reuse it. Everything is computed from the frame index, so the output is the same
on every run, and pacing goes through the :class:`~custody.clock.Clock`: under a fake clock with
auto-advance it runs as fast as the CPU allows.

What is drawn, and why:
- colour bars, and a bar sweeping left to right once every two seconds (motion for the encoder);
- a large frame counter and the frame's UTC time to the millisecond (a viewer can spot a dropped,
  repeated or reordered frame, and read the capture clock);
- a white flash in the lower right corner during the first 100 ms of every second, at the same
  instants as a 1 kHz beep in the audio, over a quiet continuous 440 Hz tone: a sync mark that a
  person or a test can measure A/V offset with.

Frames are built in yuv420p directly; going through RGB would cost more than the encoder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np

from agent.media import font
from agent.media.sources.base import (
    AudioFormat,
    RawAudioFrame,
    RawFrame,
    RawVideoFrame,
    Samples,
    VideoFormat,
    frame_time_ms,
    samples_at,
)
from agent.media.yuv import Image, check_size, new_image, planes
from custody.clock import Clock

FLASH_MS = 100
BEEP_HZ = 1000.0
TONE_HZ = 440.0
TONE_LEVEL = 0.08  # of full scale: quiet enough that the beep stands out by 15 dB
BEEP_LEVEL = 0.5

# BT.601 limited-range YUV of the classic 75% bars: white, yellow, cyan, green, magenta, red, blue, black.
_BARS = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
    (16, 128, 128),
]


def flash_on(media_ms: int) -> bool:
    """Whether the sync flash/beep is on at ``media_ms`` after the source's origin."""
    return media_ms % 1000 < FLASH_MS


def synthetic_audio(start_sample: int, n: int, rate: int, channels: int = 1) -> Samples:
    """Samples ``[start_sample, start_sample + n)`` of the tone-with-beeps track, int16 ``(channels, n)``."""
    idx = np.arange(start_sample, start_sample + n, dtype=np.int64)
    t = idx / rate
    signal = TONE_LEVEL * np.sin(2 * np.pi * TONE_HZ * t)
    beep = (idx * 1000 // rate) % 1000 < FLASH_MS
    signal = np.where(beep, BEEP_LEVEL * np.sin(2 * np.pi * BEEP_HZ * t), signal)
    mono = np.round(signal * 32767).astype(np.int16)
    return np.repeat(mono[None, :], channels, axis=0)


class SyntheticSource:
    """Generated video (and optionally audio) paced by a clock; ends after ``seconds`` if given."""

    def __init__(
        self,
        clock: Clock,
        *,
        width: int = 1280,
        height: int = 720,
        fps: Fraction | int = 30,
        audio_rate: int | None = 48_000,
        audio_channels: int = 1,
        seconds: float | None = None,
    ) -> None:
        check_size(width, height)
        self._clock = clock
        self._video = VideoFormat(width, height, Fraction(fps))
        self._audio = AudioFormat(audio_rate, audio_channels) if audio_rate else None
        self._seconds = seconds
        self._background = self._bars()
        self._closed = False
        self._start_ms = 0

    @property
    def description(self) -> str:
        """``synthetic``."""
        return "synthetic"

    @property
    def video_format(self) -> VideoFormat:
        """The configured size and rate."""
        return self._video

    @property
    def audio_format(self) -> AudioFormat | None:
        """The configured audio format, or None for a silent source."""
        return self._audio

    async def open(self) -> None:
        """Nothing to acquire."""
        self._closed = False

    async def close(self) -> None:
        """Stop generating."""
        self._closed = True

    async def frames(self) -> AsyncIterator[RawFrame]:
        """Video frames, each followed by the audio samples up to the next frame, at clock pace."""
        fps = self._video.fps
        self._start_ms = self._clock.now_ms()
        t0 = self._clock.monotonic()
        total = None if self._seconds is None else round(self._seconds * fps)
        n = 0
        while not self._closed and (total is None or n < total):
            due = t0 + float(n / fps)
            wait = due - self._clock.monotonic()
            if wait > 0:
                await self._clock.sleep(wait)
                if self._closed:
                    break
            yield self.video_frame(n, self._start_ms)
            if self._audio is not None:
                yield self.audio_block(n, self._start_ms)
            n += 1

    def video_frame(self, n: int, start_ms: int) -> RawVideoFrame:
        """Frame ``n`` of a run whose frame 0 was captured at ``start_ms``."""
        w, h, fps = self._video.width, self._video.height, self._video.fps
        time_ms = frame_time_ms(start_ms, n, fps)
        media_ms = round(n * 1000 / fps)
        img = self._background.copy()
        y, u, v = planes(img, w, h)
        # Sweeping bar: a full pass every two seconds.
        period = max(1, round(2 * fps))
        bar_w = max(2, w // 40) & ~1
        x = ((n % period) * (w - bar_w) // period) & ~1
        y[:, x : x + bar_w] = 235
        u[:, x // 2 : (x + bar_w) // 2] = 128
        v[:, x // 2 : (x + bar_w) // 2] = 128
        if flash_on(media_ms):
            s = max(8, h // 6) & ~1
            y[h - s :, w - s :] = 235
            u[(h - s) // 2 :, (w - s) // 2 :] = 128
            v[(h - s) // 2 :, (w - s) // 2 :] = 128
        self._stamp(y, f"{n:08d}", max(1, h // 60), h // 2)
        stamp = datetime.fromtimestamp(time_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        self._stamp(y, f"{stamp}.{time_ms % 1000:03d}Z", max(1, h // 180), h * 3 // 4)
        return RawVideoFrame(img, n, time_ms)

    def audio_block(self, n: int, start_ms: int) -> RawAudioFrame:
        """The audio from the start of frame ``n`` to the start of frame ``n + 1``."""
        if self._audio is None:
            raise RuntimeError("this synthetic source has no audio")
        rate, fps = self._audio.rate, self._video.fps
        a, b = samples_at(n, fps, rate), samples_at(n + 1, fps, rate)
        return RawAudioFrame(
            synthetic_audio(a, b - a, rate, self._audio.channels),
            a,
            start_ms + a * 1000 // rate,
        )

    def _stamp(self, y: Image, text: str, scale: int, center_row: int) -> None:
        mask = font.render_text(text, scale)
        mh, mw = mask.shape
        h, w = y.shape
        mw = min(mw, w)
        r0 = max(0, min(h - mh, center_row - mh // 2))
        c0 = (w - mw) // 2
        region = y[r0 : r0 + mh, c0 : c0 + mw]
        region[:] = 16
        region[mask[:, :mw]] = 235

    def _bars(self) -> Image:
        w, h = self._video.width, self._video.height
        img = new_image(w, h)
        y, u, v = planes(img, w, h)
        edges = [round(i * w / len(_BARS)) & ~1 for i in range(len(_BARS) + 1)]
        for (yy, uu, vv), a, b in zip(_BARS, edges, edges[1:], strict=False):
            y[:, a:b] = yy
            u[:, a // 2 : b // 2] = uu
            v[:, a // 2 : b // 2] = vv
        return img
