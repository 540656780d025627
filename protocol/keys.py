"""Keys, key ids, device ids and the named signature algorithms.

The algorithm is always named on the wire, never assumed: Ed25519 now, with room for SM2/SM3
(which Chinese government systems may require) behind the same two classes. Keys are passed
in by callers; this module never reads or writes a key file.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import LocalProtocolError, SignatureError

ED25519 = "ed25519"

#: Algorithms this build can verify. A name not in here is refused, never guessed.
ALGORITHMS = frozenset({ED25519})

_DEVICE_ID_DOMAIN = b"custody:device-id:v1:"


def key_fingerprint(public_key: bytes) -> str:
    """SHA-256 of the raw public key, hex: what enrollment tokens pin and operators compare."""
    return hashlib.sha256(public_key).hexdigest()


def key_id_for(public_key: bytes) -> str:
    """The short key id carried in envelopes: the first 16 hex digits of the fingerprint."""
    return key_fingerprint(public_key)[:16]


def device_id_for(public_key: bytes) -> str:
    """A device's id, derived from its public key so that it exists before enrollment.

    24 characters of lowercase base32 (120 bits of a domain-separated SHA-256): safe in MQTT
    topics, URLs, file names and object keys.
    """
    digest = hashlib.sha256(_DEVICE_ID_DOMAIN + public_key).digest()[:15]
    return base64.b32encode(digest).decode("ascii").lower()


@functools.lru_cache(maxsize=4096)
def _loaded(raw: bytes) -> Ed25519PublicKey:
    # Decoding the curve point costs more than a hash; a server verifies thousands of entries a
    # second from a fleet of known keys, so keep the decoded keys.
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """A public key with its algorithm name."""

    alg: str
    raw: bytes

    def __post_init__(self) -> None:
        if self.alg not in ALGORITHMS:
            raise SignatureError(f"unsupported signature algorithm {self.alg!r}", code="unsupported_algorithm")
        if self.alg == ED25519 and len(self.raw) != 32:
            raise SignatureError("an Ed25519 public key is 32 bytes", code="bad_key")

    @property
    def key_id(self) -> str:
        """Key id carried in envelopes."""
        return key_id_for(self.raw)

    @property
    def fingerprint(self) -> str:
        """Full SHA-256 fingerprint, hex."""
        return key_fingerprint(self.raw)

    @property
    def device_id(self) -> str:
        """The device id this key would give a device."""
        return device_id_for(self.raw)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` is valid for ``message``."""
        try:
            _loaded(self.raw).verify(signature, message)
        except InvalidSignature:
            raise SignatureError(f"signature does not verify with key {self.key_id}") from None

    def is_valid(self, signature: bytes, message: bytes) -> bool:
        """True when ``signature`` is valid for ``message``."""
        try:
            self.verify(signature, message)
        except SignatureError:
            return False
        return True


class SigningKey:
    """A private key. The raw private bytes are only available through :meth:`private_bytes`."""

    __slots__ = ("_key", "alg", "public")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._key = private
        self.alg = ED25519
        self.public = VerifyKey(ED25519, private.public_key().public_bytes_raw())

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh Ed25519 key from the operating system's random source."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> SigningKey:
        """Load a raw 32-byte Ed25519 private key (seed)."""
        if len(raw) != 32:
            raise LocalProtocolError("an Ed25519 private key is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        """The raw private seed, for the caller to store with mode 0600. Never log it."""
        return self._key.private_bytes_raw()

    @property
    def key_id(self) -> str:
        """Key id of the public half."""
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        """Sign ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:  # never show key material, even in a traceback
        return f"SigningKey(alg={self.alg!r}, key_id={self.key_id!r})"
