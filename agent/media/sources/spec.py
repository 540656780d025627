"""Source spec strings (``synthetic``, ``v4l2:/dev/video0+alsa:hw:1,0``, ``file:PATH``) and opening them.

Grammar::

    spec    := "synthetic" | "file:" PATH | device ("+" device)*
    device  := "v4l2:" DEVICE_PATH | "alsa:" ALSA_NAME

``+`` joins a camera and a microphone (a comma would not do: ALSA names contain commas, as in
``hw:1,0``). A file path is taken verbatim, ``+`` and all.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

from agent.errors import SourceSpecError
from agent.media.sources.base import MediaSource
from agent.media.sources.device import DeviceSource
from agent.media.sources.file import FileSource
from agent.media.sources.synthetic import SyntheticSource
from custody.clock import Clock

USAGE = "use synthetic, v4l2:/dev/videoN (optionally +alsa:DEVICE) or file:PATH"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A parsed source spec."""

    kind: Literal["synthetic", "device", "file"]
    video_device: str | None = None
    audio_device: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        if self.kind == "synthetic":
            return "synthetic"
        if self.kind == "file":
            return f"file:{self.path}"
        text = f"v4l2:{self.video_device}"
        return text + (f"+alsa:{self.audio_device}" if self.audio_device else "")


def parse_source_spec(text: str) -> SourceSpec:
    """Parse a source spec; :class:`SourceSpecError` says what is wrong and what is accepted."""
    spec = text.strip()
    if not spec:
        raise SourceSpecError(f"empty source; {USAGE}")
    if spec == "synthetic":
        return SourceSpec("synthetic")
    if spec.startswith("file:"):
        path = spec[len("file:") :]
        if not path:
            raise SourceSpecError("source file: needs a path, as in file:/data/clip.mp4")
        return SourceSpec("file", path=path)
    video: str | None = None
    audio: str | None = None
    for part in spec.split("+"):
        scheme, sep, device = part.partition(":")
        if not sep:
            raise SourceSpecError(f"source {part!r} not understood; {USAGE}")
        if scheme not in ("v4l2", "alsa"):
            raise SourceSpecError(f"source type {scheme!r} unknown; {USAGE}")
        if not device:
            example = "/dev/video0" if scheme == "v4l2" else "hw:0"
            raise SourceSpecError(f"source {scheme}: needs a device, as in {scheme}:{example}")
        if scheme == "v4l2":
            if video is not None:
                raise SourceSpecError("a source can have only one camera (v4l2:)")
            video = device
        else:
            if audio is not None:
                raise SourceSpecError("a source can have only one microphone (alsa:)")
            audio = device
    if video is None:
        raise SourceSpecError(
            f"alsa:{audio} records sound only; add a camera, as in v4l2:/dev/video0+alsa:{audio}"
        )
    return SourceSpec("device", video_device=video, audio_device=audio)


def open_source(
    spec: SourceSpec | str,
    clock: Clock,
    *,
    width: int = 1280,
    height: int = 720,
    fps: Fraction | int = 30,
    audio: bool = True,
    audio_rate: int = 48_000,
    audio_channels: int = 1,
    seconds: float | None = None,
) -> MediaSource:
    """Build (not yet open) the source a spec names. ``seconds`` limits the synthetic source."""
    parsed = parse_source_spec(spec) if isinstance(spec, str) else spec
    if parsed.kind == "synthetic":
        return SyntheticSource(
            clock,
            width=width,
            height=height,
            fps=fps,
            audio_rate=audio_rate if audio else None,
            audio_channels=audio_channels,
            seconds=seconds,
        )
    if parsed.kind == "file":
        assert parsed.path is not None
        return FileSource(
            clock, Path(parsed.path), audio_rate=audio_rate, audio_channels=audio_channels, with_audio=audio
        )
    assert parsed.video_device is not None
    return DeviceSource(
        clock,
        video_device=parsed.video_device,
        audio_device=parsed.audio_device if audio else None,
        width=width,
        height=height,
        fps=fps,
        audio_rate=audio_rate,
        audio_channels=audio_channels,
    )
