"""H.264 video and AAC/Opus audio encoding, and the choice of the H.264 encoder.

One :class:`MediaEncoder` is one continuous encoder session. Its streams live in a dummy MP4
container that is never written to: opening them there makes FFmpeg fill in the global headers
(SPS/PPS in ``extradata``) that every chunk's own container copies through
``add_stream_from_template`` (approach 2 in PLATFORM-NOTES). Chunk boundaries are keyframes because
the caller asks for them (``keyframe=True`` sets ``pict_type = I``, which libx264 turns into an IDR
with ``forced-idr``) and because the natural GOP is exactly one chunk long.

The encoder is picked by probing: the hardware ``h264_v4l2m2m`` (a Raspberry Pi 4's codec block) where
it really encodes, else ``libx264``. A probe opens the encoder and encodes one frame; the candidate
list and the probe function are parameters so the choice is testable without the hardware.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeAlias

import av
import numpy as np
import numpy.typing as npt
from av.video.frame import PictureType

from agent.errors import ConfigError, EncoderUnavailableError
from agent.media.yuv import Image, check_size, new_image

log = logging.getLogger(__name__)

HARDWARE_ENCODER = "h264_v4l2m2m"
SOFTWARE_ENCODER = "libx264"
# Hardware first: on a Pi the CPU cannot spare what libx264 costs at 720p30.
DEFAULT_CANDIDATES: tuple[str, ...] = (HARDWARE_ENCODER, SOFTWARE_ENCODER)

AUDIO_CODECS = {"aac": "aac", "opus": "libopus"}

# What the encoders emit and the chunker muxes; the stream type does not matter to either.
Packet: TypeAlias = "av.Packet[Any]"


@dataclass(frozen=True, slots=True)
class VideoSettings:
    """What the video encoder is asked for."""

    width: int
    height: int
    fps: Fraction
    gop_frames: int
    bitrate: int = 4_000_000
    # ultrafast: a device's CPU and battery matter more than bits at 4 Mbit/s (x264 only).
    preset: str = "ultrafast"

    def __post_init__(self) -> None:
        try:
            check_size(self.width, self.height)
        except ValueError as exc:
            raise ConfigError(f"video size: {exc}") from None
        if self.fps <= 0:
            raise ConfigError(f"frame rate must be positive, got {self.fps}")
        if self.gop_frames < 1:
            raise ConfigError(f"GOP must be at least one frame, got {self.gop_frames}")
        if not 100_000 <= self.bitrate <= 50_000_000:
            raise ConfigError(f"video bitrate {self.bitrate} out of bounds (100 kbit/s to 50 Mbit/s)")


@dataclass(frozen=True, slots=True)
class AudioSettings:
    """What the audio encoder is asked for. ``codec`` is ``aac`` (default, plays everywhere) or ``opus``."""

    codec: str = "aac"
    rate: int = 48_000
    channels: int = 1
    bitrate: int = 64_000

    def __post_init__(self) -> None:
        if self.codec not in AUDIO_CODECS:
            raise ConfigError(f"audio codec {self.codec!r} unknown; use one of {', '.join(AUDIO_CODECS)}")
        if self.channels not in (1, 2):
            raise ConfigError(f"audio channels must be 1 or 2, got {self.channels}")
        if self.codec == "opus" and self.rate not in (8000, 12000, 16000, 24000, 48000):
            raise ConfigError(f"Opus cannot encode at {self.rate} Hz")
        if not 8000 <= self.rate <= 96000:
            raise ConfigError(f"audio rate {self.rate} Hz out of bounds")

    @property
    def layout(self) -> str:
        """FFmpeg channel layout name."""
        return "mono" if self.channels == 1 else "stereo"


def video_codec_options(codec: str, settings: VideoSettings) -> dict[str, str]:
    """Private options for ``codec`` that make keyframes land exactly on chunk boundaries."""
    if codec == SOFTWARE_ENCODER:
        gop = str(settings.gop_frames)
        return {
            "preset": settings.preset,
            # No lookahead and no B-frames: one packet out per frame in, in order, so a chunk can
            # close the moment its last frame is encoded.
            "tune": "zerolatency",
            "g": gop,
            "keyint_min": gop,
            # A scene cut must not start a GOP in mid-chunk.
            "sc_threshold": "0",
            # A frame forced to I becomes an IDR, so the chunk it starts decodes alone.
            "forced-idr": "1",
            "bf": "0",
            # A bounded rate keeps chunk sizes (and the pre-event ring's memory) predictable.
            "maxrate": str(settings.bitrate),
            "bufsize": str(settings.bitrate),
        }
    if codec == HARDWARE_ENCODER:
        # FFmpeg's V4L2 M2M wrapper maps gop_size to the driver's I-frame period and turns a frame
        # with pict_type I into V4L2_CID_MPEG_VIDEO_FORCE_KEY_FRAME.
        return {"g": str(settings.gop_frames), "bf": "0"}
    return {"g": str(settings.gop_frames), "bf": "0"}


class MediaEncoder:
    """One continuous encoder session: H.264 video and, optionally, AAC or Opus audio.

    Video pts count frames (time base ``1/fps``); audio pts count samples (``1/rate``); both start
    at the same instant, which is what keeps the chunks' audio and video in sync.
    """

    def __init__(self, video_codec: str, video: VideoSettings, audio: AudioSettings | None = None) -> None:
        check_h264_encoder(video_codec)
        self.video_settings = video
        self.audio_settings = audio
        self.video_codec = video_codec
        # Never muxed into: it only gives the streams a format that wants global headers.
        self._holder = av.open(io.BytesIO(), "w", format="mp4")
        try:
            options = video_codec_options(video_codec, video)
            vs = self._holder.add_stream(video_codec, rate=video.fps, options=options)
            if not isinstance(vs, av.VideoStream):
                raise EncoderUnavailableError(f"{video_codec} is not a video encoder")
            vs.width = video.width
            vs.height = video.height
            vs.pix_fmt = "yuv420p"
            vs.bit_rate = video.bitrate
            vs.codec_context.gop_size = video.gop_frames
            vs.codec_context.time_base = Fraction(1) / video.fps
            self.video_stream: av.VideoStream = vs
            self.audio_stream: av.AudioStream | None = None
            if audio is not None:
                a = self._holder.add_stream(AUDIO_CODECS[audio.codec], rate=audio.rate)
                if not isinstance(a, av.AudioStream):
                    raise EncoderUnavailableError(f"{audio.codec} is not an audio encoder")
                a.layout = audio.layout
                a.bit_rate = audio.bitrate
                self.audio_stream = a
            self._holder.start_encoding()
        except EncoderUnavailableError:
            self._discard_holder()
            raise
        except (av.FFmpegError, ValueError, TypeError) as exc:
            self._discard_holder()
            raise EncoderUnavailableError(f"cannot open encoder {video_codec}: {exc}") from exc
        self._time_base = Fraction(1) / video.fps
        self._audio_tb = Fraction(1, audio.rate) if audio else None
        self._parameter_sets_checked = False

    @property
    def audio_codec(self) -> str | None:
        """Short audio codec name as it appears in chunk metadata (``aac``, ``opus``) or None."""
        return self.audio_settings.codec if self.audio_settings else None

    def encode_video(self, image: Image, pts: int, *, keyframe: bool = False) -> list[Packet]:
        """Encode one yuv420p frame at ``pts`` (frames); ``keyframe`` forces an IDR here."""
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = pts
        frame.time_base = self._time_base
        if keyframe:
            frame.pict_type = PictureType.I
        return self._video_packets(self.video_stream.encode(frame))

    def encode_audio(self, samples: npt.NDArray[np.int16], pts: int) -> list[Packet]:
        """Encode int16 planar samples, shape ``(channels, n)``, starting at sample ``pts``."""
        if self.audio_stream is None or self.audio_settings is None:
            raise RuntimeError("this encoder has no audio stream")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples), format="s16p", layout=self.audio_settings.layout
        )
        frame.sample_rate = self.audio_settings.rate
        frame.pts = pts
        frame.time_base = self._audio_tb
        return list(self.audio_stream.encode(frame))

    def flush(self) -> list[Packet]:
        """Drain both encoders at the end of the session (video first, then audio)."""
        packets = self._video_packets(self.video_stream.encode(None))
        if self.audio_stream is not None:
            packets.extend(self.audio_stream.encode(None))
        return packets

    def close(self) -> None:
        """Release the codec contexts."""
        self._discard_holder()

    def _video_packets(self, packets: Sequence[Packet]) -> list[Packet]:
        out = list(packets)
        for p in out:
            # Encoders leave duration 0; the MP4's last sample (and so the chunk's duration) is only
            # exact when every packet says it lasts one frame.
            p.duration = 1
            if not self._parameter_sets_checked and p.is_keyframe:
                self._parameter_sets_checked = True
                ensure_parameter_sets(self.video_stream, bytes(p))
        return out

    def _discard_holder(self) -> None:
        holder, self._holder = self._holder, None  # type: ignore[assignment]
        if holder is not None:
            try:
                holder.close()
            except av.FFmpegError as exc:  # nothing was ever muxed; a trailer error means nothing
                log.debug("closing the encoder's holder container: %s", exc)


def check_h264_encoder(codec: str) -> None:
    """Raise :class:`EncoderUnavailableError` unless this FFmpeg build has ``codec`` as an H.264 encoder."""
    try:
        found = av.codec.Codec(codec, "w")
    except ValueError:
        raise EncoderUnavailableError(f"encoder {codec!r} is not in this FFmpeg build") from None
    if found.canonical_name != "h264":
        raise EncoderUnavailableError(f"encoder {codec!r} makes {found.canonical_name}, not H.264")


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (start codes removed)."""
    nals: list[bytes] = []
    i, n = 0, len(data)
    start = -1
    while i + 3 <= n:
        if data[i] == 0 and data[i + 1] == 0 and data[i + 2] == 1:
            if start >= 0:
                nals.append(data[start:i].rstrip(b"\x00"))
            i += 3
            start = i
        else:
            i += 1
    if start >= 0:
        nals.append(data[start:])
    return [x for x in nals if x]


def ensure_parameter_sets(stream: av.VideoStream, keyframe: bytes) -> bool:
    """Give ``stream`` SPS/PPS extradata taken from its first keyframe if the encoder set none.

    Some hardware encoders emit SPS/PPS only in-band, in the first IDR. FFmpeg's MP4 muxer would
    then take a chunk's first packet as its parameter sets, which fails for every chunk but the
    first; copying them into the template's extradata once makes every chunk self-contained.
    Returns whether extradata was set.
    """
    ctx = stream.codec_context
    if ctx.extradata:
        return False
    sets = [n for n in split_annexb(keyframe) if n[0] & 0x1F in (7, 8)]
    if not any(n[0] & 0x1F == 7 for n in sets) or not any(n[0] & 0x1F == 8 for n in sets):
        log.warning("H.264 keyframe carries no SPS/PPS and the encoder gave no extradata")
        return False
    ctx.extradata = b"".join(b"\x00\x00\x00\x01" + n for n in sets)
    log.info("took H.264 parameter sets from the first keyframe (%d bytes)", len(ctx.extradata))
    return True


Probe: TypeAlias = Callable[[str, VideoSettings], None]


def probe_video_encoder(codec: str, settings: VideoSettings) -> None:
    """Raise unless ``codec`` opens at ``settings``' size and turns one frame into a keyframe.

    The probe runs at the real frame size rather than a thumbnail: a hardware block that accepts
    160x120 may still refuse 1920x1080, and one frame costs a few tens of milliseconds.
    """
    enc = MediaEncoder(codec, settings, None)
    try:
        packets = enc.encode_video(new_image(settings.width, settings.height), 0, keyframe=True)
        packets += enc.flush()
    except av.FFmpegError as exc:
        raise EncoderUnavailableError(f"{codec} failed to encode a test frame: {exc}") from exc
    finally:
        enc.close()
    if not packets or not packets[0].is_keyframe:
        raise EncoderUnavailableError(f"{codec} produced no keyframe for a test frame")


def select_video_encoder(
    settings: VideoSettings,
    candidates: Sequence[str] = DEFAULT_CANDIDATES,
    probe: Probe = probe_video_encoder,
) -> str:
    """The first of ``candidates`` whose probe succeeds; :class:`EncoderUnavailableError` if none does."""
    reasons: list[str] = []
    for codec in candidates:
        try:
            probe(codec, settings)
        except Exception as exc:  # any failure means "not this one"; every reason is reported
            log.info("video encoder %s unusable: %s", codec, exc)
            reasons.append(f"{codec}: {exc}")
            continue
        log.info("video encoder: %s", codec)
        return codec
    raise EncoderUnavailableError(
        "no working H.264 encoder (" + "; ".join(reasons or ["no candidates"]) + ")"
    )
