"""Reading the synthetic source's sync marks back out of encoded media.

The synthetic source flashes a white corner and beeps at 1 kHz at the start of every second of
its timeline. Decoding a chunk and comparing when each flash shows with when each beep starts
measures the A/V offset a viewer would see, through the whole pipeline: encoder delays, chunk
cutting, MP4 edit lists and the decoder. Used by the tests and the device self-test.
"""

from __future__ import annotations

import io

import av
import numpy as np

from agent.media.sources.synthetic import BEEP_LEVEL

# Half the beep's amplitude: the quiet tone stays below, the beep's first cycle crosses it.
_THRESHOLD = 0.5 * BEEP_LEVEL * 32767
_CORNER = 20  # pixels of the flash square sampled, well inside it at any size


def flash_times(data: bytes) -> list[float]:
    """Presentation times (s) of the first frame of each flash in a chunk."""
    times: list[float] = []
    previous = False
    with av.open(io.BytesIO(data), "r") as c:
        for frame in c.decode(video=0):
            y = frame.to_ndarray()[: frame.height]
            on = bool(y[-_CORNER:, -_CORNER:].mean() > 200)
            if on and not previous:
                times.append(float(frame.time or 0))
            previous = on
    return times


def beep_onsets(data: bytes) -> list[float]:
    """Presentation times (s) at which each beep starts in a chunk's sound."""
    with av.open(io.BytesIO(data), "r") as c:
        if not c.streams.audio:
            return []
        frames = list(c.decode(audio=0))
    if not frames:
        return []
    rate = frames[0].sample_rate
    start = float(frames[0].time or 0)
    samples = np.concatenate([f.to_ndarray()[0].reshape(-1) for f in frames]).astype(np.float64)
    if frames[0].format.name.startswith("flt"):
        samples *= 32767
    idx = np.flatnonzero(np.abs(samples) > _THRESHOLD)
    onsets: list[float] = []
    i = 0
    while i < len(idx):
        onsets.append(start + float(idx[i]) / rate)
        # Skip past this beep (100 ms long) before looking for the next one.
        i = int(np.searchsorted(idx, idx[i] + rate // 5))
    return onsets


def sync_offsets(data: bytes, video_duration_s: float, *, since_s: float = 0.0) -> list[float]:
    """Beep onset minus flash time (s) for every mark between ``since_s`` and the end of the video.

    Sound may run up to one audio frame past the picture, so a beep after the last frame belongs
    to the next chunk and is left out. Raises ValueError when flashes and beeps do not pair up
    (a mark lost in the sound or the picture is a failure in itself).
    """
    flashes = [t for t in flash_times(data) if t >= since_s]
    beeps = [t for t in beep_onsets(data) if since_s - 0.05 <= t < video_duration_s - 0.001]
    if len(flashes) != len(beeps):
        raise ValueError(f"{len(flashes)} flashes but {len(beeps)} beeps")
    return [b - f for f, b in zip(flashes, beeps, strict=True)]
