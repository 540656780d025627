"""Signed envelopes: the one container every signed Custody message travels in.

Wire form (canonical JSON)::

    {"alg":"ed25519","kid":"<16 hex>","payload":"<base64url>","sig":"<base64url>","type":"<payload type>"}

The signature covers the pre-authentication encoding (PAE, as in DSSE) of the payload type and
the payload bytes, so a signature made for one message type can never be accepted as another
(domain separation). Signed bytes are kept exactly as received: :attr:`Envelope.raw` is what
hashes into the chain, and verification never re-serializes anything.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from protocol.canonical import (
    DEFAULT_MAX_MESSAGE_BYTES,
    b64d,
    b64d_alphabet_checked,
    b64e,
    canonical_bytes,
    parse_canonical,
)
from protocol.errors import EncodingError, LocalProtocolError, SchemaError, SignatureError
from protocol.keys import ALGORITHMS, SigningKey, VerifyKey

_PAE_PREFIX = b"CUSTODY-SIG-V1"
_ENVELOPE_KEYS = frozenset({"alg", "kid", "payload", "sig", "type"})


def pae(payload_type: str, payload: bytes) -> bytes:
    """Pre-authentication encoding: the exact bytes a signature covers."""
    t = payload_type.encode("utf-8")
    return b"%s %d %s %d %s" % (_PAE_PREFIX, len(t), t, len(payload), payload)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A signed payload. Build with :meth:`sign` or :meth:`from_bytes`, never by hand."""

    payload_type: str
    payload: bytes
    alg: str
    key_id: str
    signature: bytes
    raw: bytes = field(repr=False)

    @classmethod
    def sign(cls, payload_type: str, payload: bytes, key: SigningKey) -> Envelope:
        """Sign ``payload`` as ``payload_type`` with ``key``."""
        if not payload_type:
            raise LocalProtocolError("payload type must not be empty")
        sig = key.sign(pae(payload_type, payload))
        raw = canonical_bytes(
            {"alg": key.alg, "kid": key.key_id, "payload": b64e(payload), "sig": b64e(sig), "type": payload_type}
        )
        return cls(payload_type, payload, key.alg, key.key_id, sig, raw)

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Envelope:
        """Parse envelope bytes as received (signature not yet checked: see :meth:`verify`)."""
        payload_type, payload, alg, key_id, signature = _parse_envelope(data, max_bytes)
        return cls(payload_type, payload, alg, key_id, signature, data)

    def to_bytes(self) -> bytes:
        """The exact envelope bytes (as signed, or as received)."""
        return self.raw

    @property
    def hash(self) -> bytes:
        """SHA-256 of the exact envelope bytes: the value the next chain entry's ``prev`` holds."""
        return hashlib.sha256(self.raw).digest()

    def verify(self, key: VerifyKey, *, payload_type: str | None = None) -> None:
        """Check type, algorithm, key id and signature; raise :class:`SignatureError` on any mismatch."""
        if payload_type is not None and self.payload_type != payload_type:
            raise SignatureError(
                f"payload type is {self.payload_type!r}, expected {payload_type!r}", code="wrong_payload_type"
            )
        if self.alg != key.alg:
            raise SignatureError(f"envelope algorithm {self.alg!r} does not match key ({key.alg})", code="wrong_key")
        if self.key_id != key.key_id:
            raise SignatureError(f"signed by key {self.key_id}, expected key {key.key_id}", code="wrong_key")
        key.verify(self.signature, pae(self.payload_type, self.payload))


# The canonical form of an envelope whose fields use only their expected alphabets. Nothing in
# these alphabets needs escaping, so a match is canonical JSON by construction and parses in
# one regex pass; anything else takes the general parser, which explains what is wrong.
_CANONICAL_ENVELOPE = re.compile(
    rb'\{"alg":"([a-z0-9-]{1,32})","kid":"([0-9a-f]{16})","payload":"([A-Za-z0-9_-]*)",'
    rb'"sig":"([A-Za-z0-9_-]{1,200})","type":"([a-z0-9/._-]{1,100})"\}'
)


def _parse_envelope(data: bytes, max_bytes: int) -> tuple[str, bytes, str, str, bytes]:
    if len(data) > max_bytes:
        raise EncodingError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}", code="oversize")
    m = _CANONICAL_ENVELOPE.fullmatch(data)
    if m is not None:
        alg_b, kid_b, payload_b, sig_b, ptype_b = m.groups()
        alg = alg_b.decode("ascii")
        if alg not in ALGORITHMS:
            raise SignatureError(f"unsupported signature algorithm {alg!r}", code="unsupported_algorithm")
        return (
            ptype_b.decode("ascii"),
            b64d_alphabet_checked(payload_b, field="payload"),
            alg,
            kid_b.decode("ascii"),
            b64d_alphabet_checked(sig_b, field="sig"),
        )
    else:
        obj = parse_canonical(data, max_bytes=max_bytes)
        keys = obj.keys()
        if keys != _ENVELOPE_KEYS:
            missing = sorted(_ENVELOPE_KEYS - keys)
            unknown = sorted(keys - _ENVELOPE_KEYS)
            parts = [
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown field {', '.join(unknown)}" if unknown else "",
            ]
            raise SchemaError(
                f"envelope: {'; '.join(p for p in parts if p)}", code="unknown_field" if unknown else "missing_field"
            )
        for name in _ENVELOPE_KEYS:
            if not isinstance(obj[name], str):
                raise SchemaError(f"envelope field {name} must be a string", code="wrong_type")
        alg, kid, payload, sig, ptype = obj["alg"], obj["kid"], obj["payload"], obj["sig"], obj["type"]
    if alg not in ALGORITHMS:
        raise SignatureError(f"unsupported signature algorithm {alg!r}", code="unsupported_algorithm")
    return ptype, b64d(payload, field="payload"), alg, kid, b64d(sig, field="sig")
