"""What every footage store offers, and the content-derived object keys they share.

A store never overwrites and never deletes: there is no method for either. Keys are derived
from the content (``DEVICE/SEQ/SHA256``), so a re-upload of the same chunk lands on the same key
and a different body for the same sequence number can never land on the original's key;
conflicting bodies are kept aside under ``conflicts/``.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from typing import Any

from server.errors import Conflict
from server.storage.grant import AccessGrant

_KEY_RE = re.compile(r"(conflicts/)?[a-z2-7]{24}/[0-9]{12}/[0-9a-f]{64}")


def object_key(device_id: str, seq: int, sha256: str) -> str:
    """The key of a chunk's bytes: device, zero-padded sequence (sorts in order), content hash."""
    return f"{device_id}/{seq:012d}/{sha256}"


def conflict_key(device_id: str, seq: int, sha256: str) -> str:
    """Where a conflicting body for an existing sequence number is kept as evidence."""
    return "conflicts/" + object_key(device_id, seq, sha256)


def is_valid_key(key: str) -> bool:
    """True for keys this system makes (and nothing else: no traversal, no stray characters)."""
    return _KEY_RE.fullmatch(key) is not None


@dataclass(frozen=True, slots=True)
class UploadTarget:
    """Where and how a device PUTs a chunk; the device sends ``headers`` verbatim."""

    method: str
    url: str
    headers: dict[str, str]
    expires_at: int  # ms since the epoch, like every time on the wire

    def to_json(self) -> dict[str, Any]:
        """JSON form for the API."""
        return {"method": self.method, "url": self.url, "headers": dict(self.headers), "expires_at": self.expires_at}


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object's bytes and what the store says about them."""

    data: bytes
    #: Object Lock mode and retain-until time (ms) as the store reports them; None where there is none.
    lock_mode: str | None = None
    retain_until_ms: int | None = None
    #: SHA-256 (hex) the store itself computed and checked at write time, where it does.
    store_sha256: str | None = None


class ObjectExists(Conflict):
    """A different body already sits under this key (cannot happen with honest content-derived keys)."""

    code = "object_exists"


class ContentMismatch(ValueError):
    """Bytes offered to ``put`` do not hash to the SHA-256 their key names (nothing was stored)."""


class StoreUnavailable(Exception):
    """The store could not be reached or refused a request for a reason that is not the client's."""


class FootageStore(abc.ABC):
    """A write-once store of chunk bytes."""

    #: "local" or "s3", reported in the API and used in docs.
    kind: str = ""
    #: True when the store itself enforces write-once (S3 Object Lock); the local store is tamper-evident only.
    write_once: bool = False
    #: True when the server itself takes a chunk's bytes (the local store): a device may then PUT
    #: them with their signed manifest in one request (``PUT /api/v1/chunks/{device}/{seq}``)
    #: instead of announcing first for an upload target.
    direct_upload: bool = False

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Check the store is usable (create directories, check the bucket's Object Lock)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients and threads."""

    @abc.abstractmethod
    def upload_target(self, key: str, sha256: str, size: int, now_ms: int, ttl_s: int) -> UploadTarget:
        """A target the device can PUT exactly these bytes to, until ``now_ms + ttl_s``."""

    @abc.abstractmethod
    async def put(self, key: str, data: bytes, sha256: str) -> bool:
        """Store ``data`` under ``key`` once; True if written now, False if the same bytes were already there.

        Raises :class:`ContentMismatch` (nothing stored) when ``data`` does not hash to ``sha256``,
        and :class:`ObjectExists` when different bytes are there (the original is untouched).
        """

    @abc.abstractmethod
    async def get(self, key: str, grant: AccessGrant) -> StoredObject | None:
        """The object's bytes, or None when there is no object under ``key``.

        ``grant`` is the access event that permits the read (server/storage/grant.py): footage is
        never read without one. Implementations call ``require_grant(grant, key)`` before any I/O.
        """

    async def seal(self, key: str) -> None:  # noqa: B027 - optional hook
        """Called once the object verified (local store: make the file read-only)."""

    async def extend_retention(self, key: str, until_ms: int) -> int | None:
        """Make the store keep ``key`` at least until ``until_ms``; never shortens. The store's date after.

        The local store has no retention of its own (the database keeps it): None.
        """
        return None

    async def set_legal_hold(self, key: str, on: bool) -> None:  # noqa: B027 - optional hook
        """Put (or lift) the store's own legal hold on ``key`` (S3 Object Lock); a no-op where there is none."""

    @abc.abstractmethod
    async def remove_expired(self, key: str, warrant: object) -> bool:
        """Remove an object whose retention ended; only the expiry job holds a warrant (server/services/expiry.py).

        True when removed now; False when the store itself still retains it (S3 Object Lock).
        """


class NoWarrant(Exception):
    """Footage removal asked for outside the expiry job: a bug in the caller, never a client's fault."""


def check_warrant(key: str, warrant: object) -> None:
    """Refuse a removal that does not carry the expiry job's warrant for exactly this key."""
    from server.services.expiry import ExpiryWarrant  # the one place warrants come from

    if not isinstance(warrant, ExpiryWarrant) or not warrant.valid_for(key):
        raise NoWarrant(f"removing {key} needs the expiry job's warrant for it")
