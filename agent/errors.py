"""Errors the agent reports to a person (one line each in the CLI)."""

from __future__ import annotations

from protocol.errors import CustodyError


class AgentError(CustodyError):
    """Something on the device went wrong in a way a person can act on."""

    code = "agent_error"


class StorageFullError(AgentError):
    """The buffer has no room for new footage; nothing already recorded is touched."""

    code = "storage_full"


class BufferCorruptError(AgentError):
    """A file in the buffer does not match what its signed entry says (logged, kept aside, never signed)."""

    code = "buffer_corrupt"


class ConfigError(AgentError):
    """A setting is out of its bounds or malformed (the user's input is wrong)."""

    code = "bad_config"


class SourceSpecError(ConfigError):
    """A source spec string (``synthetic``, ``v4l2:/dev/video0``, ...) cannot be parsed."""

    code = "bad_source_spec"


class MediaSourceError(AgentError):
    """A capture device or media file cannot be opened or read."""

    code = "media_source"


class EncoderUnavailableError(AgentError):
    """No H.264 encoder that works on this machine (or the one asked for does not work)."""

    code = "encoder_unavailable"


class ChunkFormatError(AgentError):
    """Bytes that should be a chunk (a standalone MP4) are not one, or chunks cannot be joined."""

    code = "bad_chunk"
