"""Shared helpers for the buffer tests: chunk metadata and media bytes without encoding video."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class FakeMeta:
    """Chunk metadata as the media pipeline reports it."""

    start_ms: int
    duration_ms: int = 5000
    width: int = 320
    height: int = 240
    fps_num: int = 30
    fps_den: int = 1
    video_frames: int = 150
    video_codec: str = "h264"
    audio_codec: str | None = "aac"
    audio_rate: int | None = 48000
    audio_samples: int | None = 240_000
    pre_event: bool = False


def media(n: int = 4096) -> bytes:
    """Stand-in chunk bytes (the buffer treats media as opaque)."""
    return os.urandom(n)
