"""Enrollment tokens: one-time, created by a device admin, pinning the server key's fingerprint.

Text form: ``cet1.`` followed by base64url of canonical JSON ``{"fp": ..., "s": ..., "url": ...}``
where ``s`` is the one-time secret, ``fp`` the SHA-256 fingerprint of the server's current
public key and ``url`` the API base URL the device should enroll at. The device refuses an
enrollment answer signed by any key whose fingerprint is not ``fp``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol.canonical import b64d, b64e, canonical_bytes, parse_canonical
from protocol.envelope import Envelope
from protocol.errors import EncodingError, SchemaError, SignatureError
from protocol.messages import DeviceCertificate, EnrollmentAnswer

PREFIX = "cet1."
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{22,64}")
_FP_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class EnrollmentToken:
    """A one-time enrollment token."""

    secret: str
    server_fingerprint: str
    api_url: str

    def __post_init__(self) -> None:
        if not _SECRET_RE.fullmatch(self.secret):
            raise SchemaError("token secret must be 22-64 base64url characters", code="bad_token")
        if not _FP_RE.fullmatch(self.server_fingerprint):
            raise SchemaError("token server fingerprint must be 64 lowercase hex digits", code="bad_token")
        if not self.api_url.startswith(("http://", "https://")):
            raise SchemaError("token api url must be http(s)", code="bad_token")

    def to_string(self) -> str:
        """The text an admin hands to the device."""
        body = canonical_bytes({"fp": self.server_fingerprint, "s": self.secret, "url": self.api_url})
        return PREFIX + b64e(body)

    @classmethod
    def parse(cls, text: str) -> EnrollmentToken:
        """Parse a token string; raise :class:`SchemaError` with a clear message when it is not one."""
        text = text.strip()
        if not text.startswith(PREFIX):
            raise SchemaError("not an enrollment token (it should start with 'cet1.')", code="bad_token")
        try:
            obj = parse_canonical(b64d(text[len(PREFIX) :], field="token"))
        except EncodingError as exc:
            raise SchemaError(f"enrollment token is damaged: {exc}", code="bad_token") from None
        if set(obj) != {"fp", "s", "url"} or not all(isinstance(v, str) for v in obj.values()):
            raise SchemaError("enrollment token is damaged: unexpected fields", code="bad_token")
        return cls(secret=obj["s"], server_fingerprint=obj["fp"], api_url=obj["url"])


def open_enrollment_answer(
    token: EnrollmentToken | str, answer_bytes: bytes, device_public_key: bytes
) -> tuple[EnrollmentAnswer, DeviceCertificate]:
    """Check an enrollment answer the way a device must, and return it with its certificate.

    ``token`` is the enrollment token, or just the server key fingerprint it pinned (a device
    re-checks its stored answer at every start with the fingerprint it kept).

    (1) the answer is signed by a key listed in it whose fingerprint is the token's;
    (2) the certificate inside is signed by that same key;
    (3) the certificate is for this device's own public key.
    """
    pinned_fp = token if isinstance(token, str) else token.server_fingerprint
    envelope = Envelope.from_bytes(answer_bytes)
    answer = EnrollmentAnswer.peek(envelope)
    pinned = [k for k in answer.server_keys if k.verify_key.fingerprint == pinned_fp]
    if not pinned:
        raise SignatureError(
            "enrollment answer does not come from the server the token names (fingerprint mismatch)",
            code="wrong_server_key",
        )
    server_key = pinned[0].verify_key
    # (1)
    envelope.verify(server_key, payload_type=EnrollmentAnswer.PAYLOAD_TYPE)
    # (2)
    cert = DeviceCertificate.open(Envelope.from_bytes(answer.certificate), server_key)
    # (3)
    if cert.public_key != device_public_key or cert.device_id != answer.device_id:
        raise SignatureError("enrollment answer certifies another device's key", code="wrong_device")
    return answer, cert
