"""Checking that bytes are a standalone, playable chunk: what the tests, the self-test and the Pi
smoke test assert, measured on the file itself rather than trusted from its metadata."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from agent.errors import ChunkFormatError


@dataclass(frozen=True, slots=True)
class ChunkReport:
    """What a chunk holds, as decoded by PyAV."""

    size: int
    moov_before_mdat: bool
    start_time_s: float
    width: int
    height: int
    video_codec: str
    video_frames: int
    video_duration_s: Fraction
    first_frame_keyframe: bool
    audio_codec: str | None
    audio_rate: int | None
    audio_samples: int
    audio_duration_s: Fraction

    @property
    def av_offset_s(self) -> float:
        """Audio duration minus video duration (0 without audio)."""
        return float(self.audio_duration_s - self.video_duration_s) if self.audio_codec else 0.0


def _top_level_order(data: bytes) -> list[bytes]:
    kinds, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
        elif size == 0:
            size = len(data) - pos
        if size < 8:
            break
        kinds.append(kind)
        pos += size
    return kinds


def check_chunk(source: bytes | str | Path) -> ChunkReport:
    """Decode every frame of a chunk on its own; :class:`ChunkFormatError` if it cannot be."""
    data = Path(source).read_bytes() if isinstance(source, str | Path) else source
    kinds = _top_level_order(data)
    if b"moov" not in kinds:
        raise ChunkFormatError("not an MP4 chunk: no moov box")
    try:
        with av.open(io.BytesIO(data), "r") as c:
            if not c.streams.video:
                raise ChunkFormatError("chunk has no video stream")
            vs = c.streams.video[0]
            width, height, vcodec = vs.codec_context.width, vs.codec_context.height, vs.codec_context.name
            start = (c.start_time or 0) / 1_000_000
            frames: list[Any] = []
            ticks = 0  # sum of packet durations: the duration the file itself declares
            for packet in c.demux(vs):
                ticks += packet.duration or 0
                frames.extend(packet.decode())
            video_s = Fraction(ticks) * (vs.time_base or Fraction(0))
        if not frames:
            raise ChunkFormatError("chunk has no decodable video frame")
        first_key = bool(frames[0].key_frame)
        acodec, arate, samples = None, None, 0
        with av.open(io.BytesIO(data), "r") as c:
            if c.streams.audio:
                a = c.streams.audio[0]
                acodec, arate = a.codec_context.name, a.codec_context.sample_rate
                samples = sum(int(f.samples) for f in c.decode(audio=0))
    except av.FFmpegError as exc:
        raise ChunkFormatError(f"chunk does not decode: {exc}") from exc
    return ChunkReport(
        size=len(data),
        moov_before_mdat=b"mdat" not in kinds or kinds.index(b"moov") < kinds.index(b"mdat"),
        start_time_s=start,
        width=width,
        height=height,
        video_codec=vcodec,
        video_frames=len(frames),
        video_duration_s=video_s,
        first_frame_keyframe=first_key,
        audio_codec=acodec,
        audio_rate=arate,
        audio_samples=samples,
        audio_duration_s=Fraction(samples, arate) if arate else Fraction(0),
    )
