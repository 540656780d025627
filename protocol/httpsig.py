"""Signed HTTP requests from devices: method, path, body hash, time and nonce, signed with the device key.

The signed bytes are the PAE (see :mod:`protocol.envelope`) of the payload type
``custody/http-request/v1`` and the canonical JSON of the request's parts, so a request
signature can never be mistaken for any other signed message. The server enforces a freshness
window on ``time`` and uniqueness of ``nonce`` within it (:class:`NonceWindow`, or a database
constraint in a multi-process deployment).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from protocol.canonical import b64d, b64e, canonical_bytes
from protocol.envelope import pae
from protocol.errors import RemoteProtocolError, RequestAuthError
from protocol.keys import SigningKey, VerifyKey
from protocol.schema import Invalid, check_device_id, check_key_id, check_nonce

PAYLOAD_TYPE = "custody/http-request/v1"

H_DEVICE = "Custody-Device"
H_KEY_ID = "Custody-Key-Id"
H_TIME = "Custody-Time"
H_NONCE = "Custody-Nonce"
H_BODY = "Custody-Content-SHA256"
H_SIGNATURE = "Custody-Signature"
HEADERS = (H_DEVICE, H_KEY_ID, H_TIME, H_NONCE, H_BODY, H_SIGNATURE)
#: A chunk PUT with its signed manifest (``PUT /api/v1/chunks/{device}/{seq}``, the local store's
#: one-request delivery) carries the manifest's exact envelope bytes here, unpadded base64url
#: (:func:`protocol.canonical.b64e`). The manifest is that request's credential: it is signed by
#: the device key and names the body's SHA-256 and size, so the request is not signed again.
H_ENTRY = "Custody-Entry"

#: Default freshness window either side of the server's clock.
DEFAULT_WINDOW_MS = 5 * 60 * 1000


def _signed_bytes(method: str, path: str, body_sha256: str, time_ms: int, nonce: str, device_id: str) -> bytes:
    parts = {
        "body_sha256": body_sha256,
        "device_id": device_id,
        "method": method.upper(),
        "nonce": nonce,
        "path": path,
        "time_ms": time_ms,
    }
    return pae(PAYLOAD_TYPE, canonical_bytes(parts))


def sign_request(
    key: SigningKey,
    method: str,
    path: str,
    body: bytes,
    now_ms: int,
    nonce: str | None = None,
    *,
    device_id: str | None = None,
) -> dict[str, str]:
    """Headers that authenticate this request as the device holding ``key``.

    ``path`` is the request target as sent: path plus query string. ``device_id`` is needed only
    after a key rotation, when the device's id (from its first key) is not ``key``'s own.
    """
    nonce = nonce or secrets.token_hex(16)
    body_sha256 = hashlib.sha256(body).hexdigest()
    device_id = device_id or key.public.device_id
    sig = key.sign(_signed_bytes(method, path, body_sha256, now_ms, nonce, device_id))
    return {
        H_DEVICE: device_id,
        H_KEY_ID: key.key_id,
        H_TIME: str(now_ms),
        H_NONCE: nonce,
        H_BODY: body_sha256,
        H_SIGNATURE: b64e(sig),
    }


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """The authentication headers of a request, parsed but not yet verified."""

    device_id: str
    key_id: str
    time_ms: int
    nonce: str
    body_sha256: str
    signature: bytes

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> SignedRequest:
        """Parse the ``Custody-*`` headers (case-insensitively, as HTTP headers are)."""
        lower = {k.lower(): v for k, v in headers.items()}
        missing = [h for h in HEADERS if h.lower() not in lower]
        if missing:
            raise RequestAuthError(f"missing header {', '.join(missing)}", code="missing_auth")

        def get(header: str) -> str:
            return lower[header.lower()]

        try:
            check_device_id(H_DEVICE, get(H_DEVICE))
            check_key_id(H_KEY_ID, get(H_KEY_ID))
            check_nonce(H_NONCE, get(H_NONCE))
        except Invalid as exc:
            raise RequestAuthError(str(exc), code="bad_auth_header") from None
        time_text = get(H_TIME)
        # isdigit() alone accepts "²" (int() then raises ValueError) and other scripts' digits.
        if not (time_text.isascii() and time_text.isdigit()) or len(time_text) > 15:
            raise RequestAuthError(f"{H_TIME} is not milliseconds since the epoch", code="bad_auth_header")
        body = get(H_BODY)
        if len(body) != 64 or any(c not in "0123456789abcdef" for c in body):
            raise RequestAuthError(f"{H_BODY} is not a lowercase hex SHA-256", code="bad_auth_header")
        try:
            sig = b64d(get(H_SIGNATURE), field=H_SIGNATURE)
        except RemoteProtocolError as exc:
            raise RequestAuthError(str(exc), code="bad_auth_header") from None
        return cls(get(H_DEVICE), get(H_KEY_ID), int(time_text), get(H_NONCE), body, sig)

    def verify(
        self,
        key: VerifyKey,
        method: str,
        path: str,
        body: bytes,
        now_ms: int,
        window_ms: int = DEFAULT_WINDOW_MS,
        *,
        device_id: str | None = None,
    ) -> None:
        """Check freshness, body hash, key and signature. Nonce uniqueness is the caller's (stateful) job.

        ``device_id`` is the device ``key`` is enrolled for, when that is not the key's own id: a
        device keeps the id derived from its first key after it rotates to a new one.
        """
        if abs(now_ms - self.time_ms) > window_ms:
            raise RequestAuthError(
                f"request time is {(now_ms - self.time_ms) // 1000} s away from the server's clock "
                f"(window ±{window_ms // 1000} s)",
                code="stale_request",
            )
        if hashlib.sha256(body).hexdigest() != self.body_sha256:
            raise RequestAuthError("body does not match its signed SHA-256", code="body_hash_mismatch")
        owner = key.device_id if device_id is None else device_id
        if owner != self.device_id or key.key_id != self.key_id:
            raise RequestAuthError(f"key {self.key_id} is not the key of device {self.device_id}", code="wrong_key")
        signed = _signed_bytes(method, path, self.body_sha256, self.time_ms, self.nonce, self.device_id)
        if not key.is_valid(self.signature, signed):
            raise RequestAuthError("request signature does not verify", code="bad_request_signature")


class NonceWindow:
    """Remembers nonces for the freshness window, so a captured request cannot be replayed (one process)."""

    def __init__(self, window_ms: int = DEFAULT_WINDOW_MS) -> None:
        self.window_ms = window_ms
        self._seen: dict[tuple[str, str], int] = {}

    def check_and_add(self, device_id: str, nonce: str, time_ms: int, now_ms: int) -> None:
        """Raise ``replayed_request`` when the nonce was already used within the window."""
        if len(self._seen) > 10_000:
            self._evict(now_ms)
        key = (device_id, nonce)
        if key in self._seen:
            raise RequestAuthError("request nonce was already used (replay)", code="replayed_request")
        self._seen[key] = time_ms

    def _evict(self, now_ms: int) -> None:
        horizon = now_ms - 2 * self.window_ms
        self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
