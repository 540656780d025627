"""Media sources behind one interface: synthetic, V4L2 camera (+ ALSA microphone), media file."""

from agent.media.sources.base import (
    AudioFormat,
    MediaSource,
    RawAudioFrame,
    RawFrame,
    RawVideoFrame,
    VideoFormat,
)
from agent.media.sources.device import DeviceSource
from agent.media.sources.file import FileSource
from agent.media.sources.spec import SourceSpec, open_source, parse_source_spec
from agent.media.sources.synthetic import SyntheticSource

__all__ = [
    "AudioFormat",
    "DeviceSource",
    "FileSource",
    "MediaSource",
    "RawAudioFrame",
    "RawFrame",
    "RawVideoFrame",
    "SourceSpec",
    "SyntheticSource",
    "VideoFormat",
    "open_source",
    "parse_source_spec",
]
