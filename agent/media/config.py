"""Settings of the media pipeline, with their bounds (the agent's config tree maps onto this)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from agent.errors import ConfigError
from agent.media.encoder import AUDIO_CODECS, AudioSettings, VideoSettings

CHUNK_SECONDS_RANGE = (1, 60)
PRE_EVENT_SECONDS_RANGE = (0, 120)


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """What to capture and how to encode and cut it. Invalid values raise :class:`ConfigError`."""

    width: int = 1280
    height: int = 720
    fps: Fraction = field(default_factory=lambda: Fraction(30))
    chunk_seconds: int = 5
    pre_event_seconds: int = 30
    # Off by default: bystanders' conversations before an officer chose to record are not kept.
    pre_event_audio: bool = False
    video_bitrate: int = 4_000_000
    x264_preset: str = "ultrafast"
    # "auto" probes the hardware encoder first; a codec name forces that one (and fails if it fails).
    video_encoder: str = "auto"
    audio: bool = True
    audio_codec: str = "aac"
    audio_rate: int = 48_000
    audio_channels: int = 1
    audio_bitrate: int = 64_000
    # Memory cap of the pre-event ring; None derives it from the bitrates (twice the expected size).
    pre_event_max_bytes: int | None = None

    def __post_init__(self) -> None:
        lo, hi = CHUNK_SECONDS_RANGE
        if not lo <= self.chunk_seconds <= hi:
            raise ConfigError(f"chunk length must be {lo} to {hi} s, got {self.chunk_seconds}")
        lo, hi = PRE_EVENT_SECONDS_RANGE
        if not lo <= self.pre_event_seconds <= hi:
            raise ConfigError(f"pre-event buffer must be {lo} to {hi} s, got {self.pre_event_seconds}")
        if not Fraction(1) <= Fraction(self.fps) <= Fraction(120):
            raise ConfigError(f"frame rate must be 1 to 120 fps, got {self.fps}")
        if self.audio_codec not in AUDIO_CODECS:
            raise ConfigError(
                f"audio codec {self.audio_codec!r} unknown; use one of {', '.join(AUDIO_CODECS)}"
            )
        if self.pre_event_max_bytes is not None and self.pre_event_max_bytes < 0:
            raise ConfigError("pre-event memory cap cannot be negative")
        # Build once so every bound those classes check is checked here, at configuration time.
        self.video_settings(self.width, self.height, Fraction(self.fps))
        self.audio_settings()

    def chunk_frames(self, fps: Fraction | None = None) -> int:
        """Frames per chunk at ``fps`` (the source's actual rate; the configured one by default)."""
        return max(1, round(self.chunk_seconds * Fraction(fps if fps is not None else self.fps)))

    def video_settings(self, width: int, height: int, fps: Fraction) -> VideoSettings:
        """Encoder settings for a source that delivers ``width`` x ``height`` at ``fps``."""
        return VideoSettings(
            width=width,
            height=height,
            fps=Fraction(fps),
            gop_frames=self.chunk_frames(fps),
            bitrate=self.video_bitrate,
            preset=self.x264_preset,
        )

    def audio_settings(self) -> AudioSettings | None:
        """Audio encoder settings, or None when audio is off."""
        if not self.audio:
            return None
        return AudioSettings(
            codec=self.audio_codec,
            rate=self.audio_rate,
            channels=self.audio_channels,
            bitrate=self.audio_bitrate,
        )

    def pre_event_bytes_cap(self) -> int:
        """Memory cap of the pre-event ring in bytes."""
        if self.pre_event_max_bytes is not None:
            return self.pre_event_max_bytes
        bits_per_s = self.video_bitrate + (self.audio_bitrate if self.audio and self.pre_event_audio else 0)
        # Room for N seconds plus the one chunk that may overhang, twice over for rate-control bursts.
        return 2 * (self.pre_event_seconds + self.chunk_seconds) * bits_per_s // 8
