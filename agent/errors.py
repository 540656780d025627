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
