"""Turning PyAV's decoded frames into the pipeline's raw frames (shared by device and file sources)."""

from __future__ import annotations

import av
import numpy as np

from agent.media.sources.base import Samples
from agent.media.yuv import Image


def even(n: int) -> int:
    """``n`` rounded down to an even number (4:2:0 needs even sizes), at least 2."""
    return max(2, n & ~1)


def to_yuv420p(frame: av.VideoFrame, width: int, height: int) -> Image:
    """``frame`` as a yuv420p array of ``width`` x ``height``, converting or scaling only if needed."""
    if frame.format.name != "yuv420p" or frame.width != width or frame.height != height:
        # Cameras often deliver YUYV or MJPEG (yuvj420p); swscale converts, at a cost per frame.
        frame = frame.reformat(width=width, height=height, format="yuv420p")
    arr = frame.to_ndarray()
    return np.ascontiguousarray(arr, dtype=np.uint8)


class AudioBlocker:
    """Converts decoded audio to int16 planar at one rate and layout, and cuts it into equal blocks.

    Devices hand over whatever period the driver uses (ALSA's null device: one sample at a time);
    blocks of a fixed size keep the per-frame overhead downstream constant.
    """

    def __init__(self, rate: int, channels: int, block: int) -> None:
        self._layout = "mono" if channels == 1 else "stereo"
        self._resampler = av.AudioResampler(format="s16p", layout=self._layout, rate=rate)
        self._channels = channels
        self._block = block
        self._parts: list[Samples] = []
        self._buffered = 0

    @property
    def buffered(self) -> int:
        """Samples waiting for a full block."""
        return self._buffered

    def push(self, frame: av.AudioFrame | None) -> list[Samples]:
        """Add a decoded frame; return the full blocks now available. ``None`` flushes the resampler."""
        for out in self._resampler.resample(frame):
            arr = out.to_ndarray().reshape(self._channels, -1).astype(np.int16, copy=False)
            self._parts.append(arr)
            self._buffered += arr.shape[1]
        blocks: list[Samples] = []
        if self._buffered < self._block:
            return blocks
        joined = np.concatenate(self._parts, axis=1)
        full = (self._buffered // self._block) * self._block
        for i in range(0, full, self._block):
            blocks.append(np.ascontiguousarray(joined[:, i : i + self._block]))
        rest = joined[:, full:]
        self._parts = [rest] if rest.shape[1] else []
        self._buffered = int(rest.shape[1])
        return blocks

    def flush(self) -> Samples | None:
        """At the end of the input: what is left, as one short block (None if nothing is)."""
        self.push(None)
        if not self._buffered:
            return None
        rest = np.ascontiguousarray(np.concatenate(self._parts, axis=1))
        self._parts, self._buffered = [], 0
        return rest
