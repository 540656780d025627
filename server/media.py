"""The media check at ingest, and the first-keyframe decode that follows the receipt.

The check at ingest must be cheap enough for the fleet goal (PLATFORM-NOTES.md: demuxing all
packets of a 5 s chunk costs about 3.4 ms, decoding all frames 44 ms), so it does not decode:
container format, codecs and picture size, the video sample count against
``codec.video_frames``, the audio sample count against ``codec.audio_samples`` (within the
slack of AAC's 1024-sample frames), and the measured duration against ``duration_ms``.

Plain MP4s (what agents write: ``moov`` first, no fragments) are read from their sample tables
by server/mp4.py, which also proves every sample lies inside the media data (about 0.2 ms for a
1 MiB chunk). Anything that reader does not read exactly goes through FFmpeg's demuxer, which
measures the same things packet by packet (about 7 ms, most of it probing the streams).

Decoding happens after the receipt, asynchronously (:func:`decode_first_frame`): for plain MP4s
the first sample is handed straight to a decoder with the track's own configuration (no probing).
The check keeps that sample (:class:`FirstFrame`, a copy of a few tens of kilobytes) in its report,
so the decode that follows the receipt need not read the stored object back (a 1 MiB read into
fresh memory for a 50 kB keyframe); the bytes are those the store hashed before writing them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av

from protocol.messages import ChunkManifest
from server import mp4

#: FFmpeg's codec names where manifests (protocol CodecInfo) name them otherwise.
_CODEC_NAMES = {"hevc": "h265"}

#: FFmpeg's decoder for each video codec as server/mp4.py names it.
_DECODERS = {"h264": "h264", "h265": "hevc"}

#: AAC frames are 1024 samples and do not divide chunk boundaries: one frame either way is normal.
AUDIO_SLACK_SAMPLES = 2048


@dataclass(frozen=True, slots=True)
class FirstFrame:
    """A plain MP4's first video sample, with what a decoder needs to decode it alone."""

    codec: str  # FFmpeg's decoder: h264 or hevc
    config: bytes  # avcC / hvcC payload (the decoder's extradata)
    sample: bytes
    width: int | None
    height: int | None

    @classmethod
    def of(cls, data: bytes, video: mp4.Track) -> FirstFrame | None:
        """The first sample of ``video`` in ``data`` (a copy), or None when the track lacks what it takes."""
        decoder = _DECODERS.get(video.codec or "")
        if video.config is None or video.first_sample is None or decoder is None:
            return None
        offset, size = video.first_sample
        return cls(decoder, video.config, data[offset:offset + size], video.width, video.height)


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
    #: The first video sample, for the decode after the receipt (not part of the stored report).
    first_frame: FirstFrame | None = field(default=None, repr=False, compare=False)

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
    """Measure ``data`` and compare it with what ``manifest`` declares (no decoding)."""
    try:
        movie = mp4.read_movie(data)
    except mp4.Unsupported:
        return demux_chunk(data, manifest, tolerance_ms)
    except mp4.Damaged as exc:
        return MediaReport(problems=[f"container is damaged: {exc}"])
    report = MediaReport(container="mp4")
    video, audio = movie.first("vide"), movie.first("soun")
    if video is None:
        report.problems.append("no video stream")
        return report
    report.video_codec, report.width, report.height = video.codec, video.width, video.height
    report.video_frames = video.sample_count
    report.first_is_keyframe = video.first_is_sync if video.sample_count else None
    report.first_frame = FirstFrame.of(data, video)
    report.duration_ms = round(Fraction(video.total_duration, video.timescale) * 1000)
    if audio is not None:
        report.audio_codec = audio.codec
        report.audio_samples = audio.total_duration
    _compare(report, manifest, tolerance_ms)
    return report


def demux_chunk(data: bytes, manifest: ChunkManifest, tolerance_ms: int) -> MediaReport:
    """Demux ``data`` packet by packet with FFmpeg and compare it with ``manifest`` (no decoding)."""
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
        if video.codec_context is None or (audio is not None and audio.codec_context is None):
            report.problems.append("a stream's codec is unknown to the demuxer")
            return report
        report.video_codec = _CODEC_NAMES.get(video.codec_context.name, video.codec_context.name)
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


def first_frame(data: bytes) -> FirstFrame | None:
    """A plain MP4's first video sample with what decodes it; None when this reader leaves the
    file to FFmpeg's demuxer (or it has no video). :class:`mp4.Damaged` when damaged."""
    try:
        movie = mp4.read_movie(data)
    except mp4.Unsupported:
        return None
    video = movie.first("vide")
    return FirstFrame.of(data, video) if video is not None else None


def decode_first_frame(data: bytes) -> None:
    """Decode the first video frame; raise ValueError saying why when it does not decode."""
    try:
        frame = first_frame(data)
    except mp4.Damaged as exc:
        raise ValueError(f"first frame does not decode: {exc}") from None
    if frame is not None:
        decode_frame(frame)
        return
    _demux_decode_first_frame(data)


def decode_frame(frame: FirstFrame) -> None:
    """Hand a first sample to a decoder configured from its track's avcC/hvcC, without probing;
    raise ValueError saying why when it does not decode to a picture of the track's size."""
    try:
        ctx = av.CodecContext.create("h264" if frame.codec == "h264" else "hevc", "r")
        ctx.extradata = frame.config
        ctx.thread_count = 1  # one frame: worker threads would cost more than they save
        frames = ctx.decode(av.Packet(frame.sample))
        frames = frames or ctx.decode(None)  # a decoder may hold the frame until it is flushed
    except av.FFmpegError as exc:
        raise ValueError(f"first frame does not decode: {exc}") from exc
    if not frames or not (frames[0].width and frames[0].height):
        raise ValueError("first frame does not decode: the decoder returned no picture")
    if (frames[0].width, frames[0].height) != (frame.width, frame.height):
        raise ValueError(f"first frame decodes to {frames[0].width}x{frames[0].height}, "
                         f"the container says {frame.width}x{frame.height}")


def _demux_decode_first_frame(data: bytes) -> None:
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


def decode_all_frames(data: bytes) -> int:
    """Decode every video and audio frame; return the video frame count, or raise ValueError saying why."""
    frames = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format="mp4") as container:
            streams = [s for s in container.streams if s.type in ("video", "audio")]
            for frame in container.decode(*streams):
                if isinstance(frame, av.VideoFrame):
                    frames += 1
    except (av.FFmpegError, ValueError) as exc:
        raise ValueError(f"decoding failed: {exc}") from exc
    if frames == 0:
        raise ValueError("no video frame decodes")
    return frames
