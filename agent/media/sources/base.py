"""What every media source gives the pipeline: raw frames on a shared timeline.

A source yields video frames as yuv420p numpy arrays and audio as int16 planar blocks. Both carry
``pts`` counted from the same origin (the instant the source started): video in frames of
``1/fps`` (a constant-rate grid, gaps allowed where frames were lost), audio in samples of
``1/rate``. Sharing the origin is what keeps audio and video in sync downstream. ``time_ms`` is the
wall-clock capture time, which the watermark shows and chunks report.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agent.media.yuv import Image

Samples = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class VideoFormat:
    """Size and rate of a source's video."""

    width: int
    height: int
    fps: Fraction


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Rate and channel count of a source's audio (always int16 planar)."""

    rate: int
    channels: int


@dataclass(frozen=True, slots=True)
class RawVideoFrame:
    """One captured picture: ``image`` is yuv420p, shape ``(height * 3 // 2, width)``, owned by the frame."""

    image: Image
    pts: int
    time_ms: int


@dataclass(frozen=True, slots=True)
class RawAudioFrame:
    """A block of captured sound: ``samples`` is int16, shape ``(channels, n)``."""

    samples: Samples
    pts: int
    time_ms: int

    @property
    def n(self) -> int:
        """Number of samples per channel."""
        return int(self.samples.shape[1])


RawFrame = RawVideoFrame | RawAudioFrame


class MediaSource(Protocol):
    """A camera, a microphone, a file or a generator, seen the same way by the pipeline.

    ``open()`` acquires the device (raising :class:`~agent.errors.MediaSourceError` with a clear
    message when it cannot), after which ``video_format`` and ``audio_format`` are known;
    ``frames()`` yields frames in roughly time order until the source ends or ``close()`` is called.
    """

    @property
    def description(self) -> str:
        """Human-readable name (``synthetic``, ``v4l2:/dev/video0``) for logs and errors."""
        ...

    @property
    def video_format(self) -> VideoFormat:
        """Format of the video frames; valid after ``open()``."""
        ...

    @property
    def audio_format(self) -> AudioFormat | None:
        """Format of the audio blocks, or None when the source has no sound; valid after ``open()``."""
        ...

    async def open(self) -> None:
        """Acquire the device or file."""
        ...

    def frames(self) -> AsyncIterator[RawFrame]:
        """Frames until the source ends or is closed."""
        ...

    async def close(self) -> None:
        """Release the device; ends ``frames()``. Safe to call twice."""
        ...


def samples_at(frame_index: int, fps: Fraction, rate: int) -> int:
    """Audio sample index at the start of video frame ``frame_index`` (floor)."""
    return frame_index * rate * fps.denominator // fps.numerator


def frame_time_ms(start_ms: int, frame_index: int, fps: Fraction) -> int:
    """Wall-clock time of frame ``frame_index`` of a grid starting at ``start_ms``."""
    return start_ms + round(frame_index * 1000 / fps)
