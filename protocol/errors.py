"""One error hierarchy for protocol/, saying whose fault an error is.

Like h11's ``LocalProtocolError`` / ``RemoteProtocolError``: a peer's bad message is never
the same exception as our own misuse. Every error carries a stable machine ``code`` (used in
HTTP problem documents, MQTT rejections and command acks) and a user-facing message that the
CLI prints as one line.
"""

from __future__ import annotations


class CustodyError(Exception):
    """Base of every error Custody reports to a person; ``str(err)`` is the one-line message."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        """The user-facing message."""
        return str(self.args[0]) if self.args else self.code


class LocalProtocolError(CustodyError):
    """We misused the protocol (a bug or a bad argument on our side), e.g. building an invalid message."""

    code = "local_protocol_error"


class RemoteProtocolError(CustodyError):
    """A peer sent something that breaks the wire contract. Its ``code`` names the rule broken."""

    code = "remote_protocol_error"


class EncodingError(RemoteProtocolError):
    """Bytes that are not a valid message: not JSON, not canonical, truncated, oversize."""

    code = "bad_encoding"


class SchemaError(RemoteProtocolError):
    """Well-formed JSON whose fields break the schema: unknown, missing, wrong type or out of range."""

    code = "bad_schema"


class SignatureError(RemoteProtocolError):
    """A signature that does not verify, a wrong key, an unknown algorithm or payload type."""

    code = "bad_signature"


class RequestAuthError(RemoteProtocolError):
    """A signed HTTP request that fails authentication: stale, replayed, bad signature, wrong body hash."""

    code = "bad_request_signature"


class ProofError(RemoteProtocolError):
    """A Merkle inclusion or consistency proof, or a checkpoint, that does not verify."""

    code = "bad_proof"


class StateError(LocalProtocolError):
    """An illegal transition in a protocol state machine (e.g. a chunk verified before upload)."""

    code = "illegal_transition"
