"""The unit the media pipeline hands on: one closed, standalone MP4 chunk and what it holds."""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class EncodedChunk:
    """One closed chunk: a standalone MP4 whose first video packet is a keyframe at time 0.

    ``start_ms`` is the wall-clock capture time (ms since the epoch, UTC) of the first video frame;
    ``duration_ms`` is the video duration (``video_frames`` frames at ``fps_num/fps_den``), which is
    exact in the file's own time base and rounded here. The audio track, when present, covers the
    same span to within one audio frame (AAC frames are 1024 samples and do not divide chunk
    boundaries): it starts with the picture and may end up to one frame after it.
    ``audio_samples`` counts the samples a player presents; it, ``audio_codec`` and ``audio_rate``
    are None in a chunk without sound (as the manifest's codec info wants them). ``pre_event``
    marks video kept from before the recording started.
    """

    data: bytes
    start_ms: int
    duration_ms: int
    video_frames: int
    audio_samples: int | None
    width: int
    height: int
    fps_num: int
    fps_den: int
    video_codec: str
    audio_codec: str | None
    audio_rate: int | None
    pre_event: bool

    @property
    def size(self) -> int:
        """Length of ``data`` in bytes."""
        return len(self.data)

    @property
    def end_ms(self) -> int:
        """Wall-clock time just after the last frame."""
        return self.start_ms + self.duration_ms

    @property
    def fps(self) -> Fraction:
        """Frame rate as an exact fraction."""
        return Fraction(self.fps_num, self.fps_den)

    def with_pre_event(self, pre_event: bool) -> EncodedChunk:
        """A copy with the pre-event flag set as given."""
        return replace(self, pre_event=pre_event)

    def __repr__(self) -> str:
        # The default repr would print megabytes of media.
        return (
            f"EncodedChunk(start_ms={self.start_ms}, duration_ms={self.duration_ms}, "
            f"video_frames={self.video_frames}, audio_samples={self.audio_samples}, "
            f"size={self.size}, {self.width}x{self.height}@{self.fps_num}/{self.fps_den}, "
            f"{self.video_codec}/{self.audio_codec}, pre_event={self.pre_event})"
        )
