"""The media check at ingest, and the first-keyframe decode that follows the receipt.

The check at ingest must be cheap enough for the fleet goal (PLATFORM-NOTES.md: demuxing all
packets of a 5 s chunk costs about 3.4 ms, decoding all frames 44 ms), so it demuxes without
decoding: container format, codecs and picture size, the video sample count against
``codec.video_frames``, the audio sample count against ``codec.audio_samples`` (within the
slack of AAC's 1024-sample frames), and the measured duration against ``duration_ms``.
Decoding happens after the receipt, asynchronously (:func:`decode_first_frame`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from protocol.messages import ChunkManifest

#: AAC frames are 1024 samples and do not divide chunk boundaries: one frame either way is normal.
AUDIO_SLACK_SAMPLES = 2048


@dataclass(slots=True)
class MediaReport:
    """What the demuxer measured, and every mismatch with the manifest."""

    container: str | None = None
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    video_frames: int = 0
    first_is_keyframe: bool | None = None
    audio_codec: str | None = None
    audio_samples: int = 0
    duration_ms: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing disagreed."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """JSON form, stored with the verification."""
        return {
            "container": self.container, "video_codec": self.video_codec, "width": self.width,
            "height": self.height, "video_frames": self.video_frames, "first_is_keyframe": self.first_is_keyframe,
            "audio_codec": self.audio_codec, "audio_samples": self.audio_samples, "duration_ms": self.duration_ms,
            "problems": list(self.problems),
        }


def check_chunk(data: bytes, manifest: ChunkManifest, tolerance_ms: int) -> MediaReport:
    """Demux ``data`` and compare it with what ``manifest`` declares (no decoding)."""
    report = MediaReport()
    try:
        container = av.open(io.BytesIO(data), mode="r", format="mp4")
    except (av.FFmpegError, ValueError) as exc:
        report.problems.append(f"not an MP4 container: {exc}")
        return report
    try:
        report.container = "mp4"
        video = next(iter(container.streams.video), None)
        audio = next(iter(container.streams.audio), None)
        if video is None:
            report.problems.append("no video stream")
            return report
        report.video_codec = video.codec_context.name
        report.width, report.height = video.codec_context.width, video.codec_context.height
        report.audio_codec = audio.codec_context.name if audio is not None else None
        v_end = Fraction(0)
        streams = [s for s in (video, audio) if s is not None]
        for packet in container.demux(*streams):
            if packet.size == 0:  # the flush packet at the end of each stream
                continue
            if packet.stream is video:
                if report.video_frames == 0:
                    report.first_is_keyframe = bool(packet.is_keyframe)
                report.video_frames += 1
                if packet.pts is not None and packet.duration is not None and packet.time_base is not None:
                    v_end = max(v_end, (packet.pts + packet.duration) * packet.time_base)
            else:
                report.audio_samples += int(packet.duration or 0)
        report.duration_ms = round(v_end * 1000)
    except (av.FFmpegError, ValueError) as exc:
        report.problems.append(f"container is damaged: {exc}")
        return report
    finally:
        container.close()
    _compare(report, manifest, tolerance_ms)
    return report


def _compare(report: MediaReport, manifest: ChunkManifest, tolerance_ms: int) -> None:
    codec = manifest.codec
    p = report.problems
    if report.video_codec != codec.video:
        p.append(f"video codec is {report.video_codec}, the entry says {codec.video}")
    if (report.width, report.height) != (codec.width, codec.height):
        p.append(f"picture is {report.width}x{report.height}, the entry says {codec.width}x{codec.height}")
    if report.video_frames != codec.video_frames:
        p.append(f"{report.video_frames} video samples, the entry says {codec.video_frames}")
    if report.first_is_keyframe is False:
        p.append("the first video sample is not a keyframe (the chunk cannot be played on its own)")
    if codec.audio is None:
        if report.audio_codec is not None:
            p.append(f"an {report.audio_codec} audio stream the entry does not declare")
    else:
        if report.audio_codec != codec.audio:
            p.append(f"audio codec is {report.audio_codec}, the entry says {codec.audio}")
        declared = codec.audio_samples or 0
        if abs(report.audio_samples - declared) > AUDIO_SLACK_SAMPLES:
            p.append(f"{report.audio_samples} audio samples, the entry says {declared}")
    if report.duration_ms is not None and abs(report.duration_ms - manifest.duration_ms) > tolerance_ms:
        p.append(f"video lasts {report.duration_ms} ms, the entry says {manifest.duration_ms} ms")


def decode_first_frame(data: bytes) -> None:
    """Decode the first video frame; raise ValueError saying why when it does not decode."""
    try:
        with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                if frame.width and frame.height:
                    return
                break
    except (av.FFmpegError, IndexError) as exc:
        raise ValueError(f"first frame does not decode: {exc}") from exc
    raise ValueError("no video frame decodes")
