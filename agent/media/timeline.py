"""Keeping captured frames on a continuous timeline before they reach the encoder.

The encoder and the chunker assume constant-rate video (one frame per ``1/fps``, pts counting
frames) and gapless audio (PyAV's audio encoder refuses a pts jump). Live capture breaks both:
frames get dropped when the CPU is busy, a microphone loses a period. Here:

- a missing video frame is filled by repeating the previous picture, watermark included, so a
  stall shows as a frozen picture with a frozen clock rather than being hidden; a late frame in
  an already-filled slot is dropped;
- missing audio becomes silence; overlapping audio is trimmed; jitter under a tolerance is absorbed.

Gaps beyond ``max_gap_s`` mean the source's clock is broken, and raise.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from agent.errors import MediaSourceError
from agent.media.sources.base import RawAudioFrame, RawVideoFrame

MAX_GAP_S = 600


class VideoTimeline:
    """Places video frames on the constant-rate grid."""

    def __init__(self, fps: Fraction, *, max_gap_s: float = MAX_GAP_S) -> None:
        self._fps = fps
        self._max_gap = round(max_gap_s * fps)
        self._last: RawVideoFrame | None = None
        self.duplicated = 0
        self.dropped = 0

    def place(self, frame: RawVideoFrame) -> list[tuple[RawVideoFrame, bool]]:
        """The frames to encode for ``frame``, each with whether it repeats an earlier picture."""
        last = self._last
        if last is None:
            self._last = frame
            return [(frame, False)]
        gap = frame.pts - last.pts - 1
        if gap < 0:
            self.dropped += 1
            return []
        if gap > self._max_gap:
            raise MediaSourceError(
                f"video timestamps jumped by {float(gap / self._fps):.0f} s; the source clock is broken"
            )
        out = [
            (RawVideoFrame(last.image, p, last.time_ms + round((p - last.pts) * 1000 / self._fps)), True)
            for p in range(last.pts + 1, frame.pts)
        ]
        self.duplicated += len(out)
        out.append((frame, False))
        self._last = frame
        return out


class AudioTimeline:
    """Makes audio blocks contiguous: silence into gaps, overlaps trimmed, small jitter absorbed."""

    def __init__(
        self, rate: int, channels: int, *, tolerance_s: float = 0.02, max_gap_s: float = MAX_GAP_S
    ) -> None:
        self._rate = rate
        self._channels = channels
        self._tolerance = round(tolerance_s * rate)
        self._max_gap = round(max_gap_s * rate)
        self._next: int | None = None
        self.silence_samples = 0
        self.trimmed_samples = 0

    def place(self, frame: RawAudioFrame) -> list[RawAudioFrame]:
        """The blocks to encode for ``frame``, starting exactly where the previous one ended."""
        if self._next is None:
            self._next = frame.pts
        expected = self._next
        gap = frame.pts - expected
        out: list[RawAudioFrame] = []
        samples = frame.samples
        if abs(gap) <= self._tolerance:
            pass  # jitter: treat as contiguous
        elif gap > 0:
            if gap > self._max_gap:
                raise MediaSourceError(
                    f"audio timestamps jumped by {gap / self._rate:.0f} s; the source clock is broken"
                )
            for start in range(0, gap, self._rate):
                n = min(self._rate, gap - start)
                silence = np.zeros((self._channels, n), dtype=np.int16)
                out.append(
                    RawAudioFrame(
                        silence, expected + start, frame.time_ms - (gap - start) * 1000 // self._rate
                    )
                )
            self.silence_samples += gap
            expected = frame.pts
        else:
            cut = min(-gap, samples.shape[1])
            self.trimmed_samples += cut
            samples = samples[:, cut:]
            if samples.shape[1] == 0:
                return out
        out.append(RawAudioFrame(samples, expected, frame.time_ms))
        self._next = expected + samples.shape[1]
        return out
