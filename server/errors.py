"""The server's error hierarchy: every error a client can cause has an HTTP status and a stable code.

Handlers raise these; one middleware turns them into RFC 9457 problem documents
(``application/problem+json``) carrying ``code``, so clients branch on the code, never on the
message. Errors from protocol/ (a peer's bad message) are mapped to a status by their class in
:func:`status_for`. The CLI prints any of them as one line.
"""

from __future__ import annotations

from typing import Any

from protocol.errors import (
    CustodyError,
    EncodingError,
    RemoteProtocolError,
    RequestAuthError,
    SchemaError,
    SignatureError,
)


class ServerError(CustodyError):
    """Base of the server's client-facing errors; ``status`` is the HTTP status it maps to."""

    status: int = 500
    code = "server_error"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message, code=code)
        #: Extension members of the problem document (RFC 9457 section 3.2), e.g. the failed step.
        self.extra: dict[str, Any] = extra


class BadRequest(ServerError):
    """The request is malformed: bad JSON, unknown fields, wrong types, bad ids."""

    status = 400
    code = "bad_request"


class Unauthorized(ServerError):
    """No credentials, or credentials that do not authenticate anyone."""

    status = 401
    code = "unauthorized"


class Forbidden(ServerError):
    """Authenticated, but this principal may not do this."""

    status = 403
    code = "forbidden"


class NotFound(ServerError):
    """The thing named in the path does not exist."""

    status = 404
    code = "not_found"


class Conflict(ServerError):
    """The request contradicts what is already stored (a different entry for a sequence number...)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(ServerError):
    """The body is over the configured limit."""

    status = 413
    code = "payload_too_large"


class Unprocessable(ServerError):
    """Well-formed, but the content fails a check (verification failed, expired certificate...)."""

    status = 422
    code = "unprocessable"


class ConfigError(CustodyError):
    """The configuration is invalid; the message lists every problem with its line."""

    code = "bad_config"


def status_for(exc: CustodyError) -> int:
    """The HTTP status for any Custody error a request can raise."""
    if isinstance(exc, ServerError):
        return exc.status
    if isinstance(exc, RequestAuthError):
        return 401
    if isinstance(exc, EncodingError):
        return 413 if exc.code == "oversize" else 400
    if isinstance(exc, SignatureError):
        return 422  # well-formed, but the signature inside does not hold
    if isinstance(exc, SchemaError | RemoteProtocolError):
        return 400
    return 500
