"""Measuring decoded chunks: where the sync flash and beep are, and what the watermark box shows."""

from __future__ import annotations

import io

import av
import numpy as np
import numpy.typing as npt

BEEP_THRESHOLD = 0.3 * 32767


def flash_times(data: bytes) -> list[float]:
    """Presentation times (s) of the first frame of each sync flash in a chunk."""
    times, previous = [], False
    with av.open(io.BytesIO(data), "r") as c:
        for frame in c.decode(video=0):
            y = frame.to_ndarray()[: frame.height]
            on = bool(y[-20:, -20:].mean() > 200)
            if on and not previous:
                times.append(float(frame.time or 0))
            previous = on
    return times


def beep_onsets(data: bytes) -> list[float]:
    """Presentation times (s) where each 1 kHz sync beep starts in a chunk's audio."""
    with av.open(io.BytesIO(data), "r") as c:
        frames = list(c.decode(audio=0))
    if not frames:
        return []
    rate = frames[0].sample_rate
    start = float(frames[0].time or 0)
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float64)
    if samples.dtype.kind == "f" or np.abs(samples).max() <= 1.0:
        samples = samples * 32767
    loud = np.abs(samples) > BEEP_THRESHOLD
    onsets, i = [], 0
    idx = np.flatnonzero(loud)
    while i < len(idx):
        onsets.append(start + idx[i] / rate)
        # Skip to the end of this beep (100 ms) before looking for the next.
        i = int(np.searchsorted(idx, idx[i] + rate // 5))
    return onsets


def sync_offsets(data: bytes, video_duration_s: float) -> list[float]:
    """Beep onset minus flash time (s) for every sync mark inside the chunk's video.

    Sound may run up to one audio frame past the picture, so a beep that starts after the last
    frame belongs to the next chunk's picture and is left out.
    """
    flashes = flash_times(data)
    beeps = [b for b in beep_onsets(data) if b < video_duration_s - 0.001]
    assert len(flashes) == len(beeps), (flashes, beeps)
    return [b - f for f, b in zip(flashes, beeps, strict=True)]


def first_frame_luma(data: bytes) -> npt.NDArray[np.uint8]:
    """The Y plane of a chunk's first frame."""
    with av.open(io.BytesIO(data), "r") as c:
        frame = next(c.decode(video=0))
        return np.asarray(frame.to_ndarray(), dtype=np.uint8)[: frame.height]
