"""The typed leaves of the transparency log: what the server commits to, in hashes and ids only.

Every leaf is canonical JSON with a ``leaf`` field naming its kind; the Merkle leaf hash is
RFC 6962's ``SHA-256(0x00 || leaf bytes)``. Leaves carry no personal data: people appear as
opaque principal ids (``user:17``), free text (an access reason) only as its SHA-256, footage as
device ids, sequence numbers and content hashes. Anyone may therefore read every leaf of the log,
and a court can check that an entry, an access or a key change is in it without the server
revealing anything else. A legal hold's setting and lifting are leaves too (reason hashed, role
named), so footage cannot be released from a hold without a trace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import ClassVar

from protocol.canonical import parse_canonical
from protocol.errors import SchemaError
from protocol.merkle import leaf_hash
from protocol.schema import (
    Invalid,
    Message,
    check_device_id,
    check_hex32,
    check_id,
    check_key_id,
    check_name,
    check_one_of,
    check_range,
    check_time,
)

#: Largest leaf accepted when parsing (leaves are a few hundred bytes).
MAX_LEAF_BYTES = 4096

ACCESS_KINDS = frozenset({"view", "live_view", "download", "export", "integrity"})
KEY_EVENTS = frozenset({"server_key", "device_key", "device_state"})
LINK_ACTIONS = frozenset({"link", "unlink"})
DEVICE_STATES = frozenset({"active", "suspended", "lost", "revoked"})
HOLD_ACTIONS = frozenset({"set", "lift"})
HOLD_TARGETS = frozenset({"case", "recording"})


def text_sha256(text: str) -> str:
    """Hex SHA-256 of UTF-8 text: how a leaf refers to free text (an access reason) without holding it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def keys_sha256(object_keys: list[str] | tuple[str, ...]) -> str:
    """Hex SHA-256 of the sorted object keys, one per line: the footage an access event covered."""
    return hashlib.sha256("".join(k + "\n" for k in sorted(object_keys)).encode("ascii")).hexdigest()


class Leaf(Message):
    """Common base: ``leaf`` names the kind; :meth:`hash` is the RFC 6962 leaf hash of the bytes."""

    KIND: ClassVar[str] = ""
    leaf: str

    def _check_kind(self) -> None:
        if self.leaf != self.KIND:
            raise Invalid(f"leaf kind {self.leaf!r} is not {self.KIND!r}", "bad_value")

    def hash(self) -> bytes:
        """RFC 6962 leaf hash of the canonical bytes."""
        return leaf_hash(self.to_bytes())


@dataclass(frozen=True, slots=True)
class EntryLeaf(Leaf):
    """A device entry the server accepted and receipted (chunk manifest or recording event)."""

    KIND: ClassVar[str] = "entry"

    v: int
    leaf: str
    device_id: str
    seq: int
    entry_hash: str
    stored_sha256: str | None
    time_ms: int

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        self._check_kind()
        check_device_id("device_id", self.device_id)
        check_range("seq", self.seq, 0)
        check_hex32("entry_hash", self.entry_hash)
        check_hex32("stored_sha256", self.stored_sha256, optional=True)
        check_time("time_ms", self.time_ms)


@dataclass(frozen=True, slots=True)
class AccessLeaf(Leaf):
    """Someone (or a server duty) read footage: who (opaque id), what (hash of the object keys), why (hash)."""

    KIND: ClassVar[str] = "access"

    v: int
    leaf: str
    access_id: int
    kind: str
    principal: str
    device_id: str | None
    recording_id: str | None
    case_id: str | None
    objects: int
    objects_sha256: str
    reason_sha256: str
    time_ms: int

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        self._check_kind()
        check_range("access_id", self.access_id, 1)
        check_one_of("kind", self.kind, ACCESS_KINDS)
        check_id("principal", self.principal)
        if self.device_id is not None:
            check_device_id("device_id", self.device_id)
        check_id("recording_id", self.recording_id, optional=True)
        check_id("case_id", self.case_id, optional=True)
        check_range("objects", self.objects, 0)
        check_hex32("objects_sha256", self.objects_sha256)
        check_hex32("reason_sha256", self.reason_sha256)
        check_time("time_ms", self.time_ms)


@dataclass(frozen=True, slots=True)
class LinkLeaf(Leaf):
    """A recording (or a device-clock range of it: ``from_ms``..``until_ms``) linked to or unlinked from a case step."""

    KIND: ClassVar[str] = "link"

    v: int
    leaf: str
    link_id: int
    action: str
    case_id: str
    step_id: str
    device_id: str
    recording_id: str
    from_ms: int | None
    until_ms: int | None
    principal: str
    time_ms: int

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        self._check_kind()
        check_range("link_id", self.link_id, 1)
        check_time("from_ms", self.from_ms, optional=True)
        check_time("until_ms", self.until_ms, optional=True)
        check_one_of("action", self.action, LINK_ACTIONS)
        check_id("case_id", self.case_id)
        check_id("step_id", self.step_id)
        check_device_id("device_id", self.device_id)
        check_id("recording_id", self.recording_id)
        check_id("principal", self.principal)
        check_time("time_ms", self.time_ms)


@dataclass(frozen=True, slots=True)
class KeyLeaf(Leaf):
    """A key event: a server key created, a device key added (enrollment, rotation), a device state change."""

    KIND: ClassVar[str] = "key"

    v: int
    leaf: str
    event: str
    key_id: str | None
    fingerprint: str | None
    device_id: str | None
    state: str | None
    cutoff_seq: int | None
    time_ms: int

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        self._check_kind()
        check_one_of("event", self.event, KEY_EVENTS)
        if self.key_id is not None:
            check_key_id("key_id", self.key_id)
        check_hex32("fingerprint", self.fingerprint, optional=True)
        if self.device_id is not None:
            check_device_id("device_id", self.device_id)
        if self.state is not None:
            check_one_of("state", self.state, DEVICE_STATES)
        check_range("cutoff_seq", self.cutoff_seq, 0, optional=True)
        check_time("time_ms", self.time_ms)
        if self.event == "server_key" and (self.key_id is None or self.fingerprint is None):
            raise Invalid("a server_key event names the key and its fingerprint")
        if self.event == "device_key" and (self.device_id is None or self.fingerprint is None):
            raise Invalid("a device_key event names the device and the key's fingerprint")
        if self.event == "device_state" and (self.device_id is None or self.state is None):
            raise Invalid("a device_state event names the device and its new state")


@dataclass(frozen=True, slots=True)
class ExpiryLeaf(Leaf):
    """Footage left the store at the end of its retention: the only way footage ever leaves."""

    KIND: ClassVar[str] = "expiry"

    v: int
    leaf: str
    device_id: str
    seq: int
    stored_sha256: str
    time_ms: int

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        self._check_kind()
        check_device_id("device_id", self.device_id)
        check_range("seq", self.seq, 0)
        check_hex32("stored_sha256", self.stored_sha256)
        check_time("time_ms", self.time_ms)


@dataclass(frozen=True, slots=True)
class HoldLeaf(Leaf):
    """A legal hold set on or lifted from a case or a recording: who (opaque id, role), why (hash), when.

    Held footage never expires, so the lift is what could release it: with both ends in the log,
    footage cannot leave a hold without a public trace of who lifted it and when.
    """

    KIND: ClassVar[str] = "hold"

    v: int
    leaf: str
    hold_id: int
    action: str
    target: str
    case_id: str | None
    device_id: str | None
    recording_id: str | None
    principal: str
    role: str
    reason_sha256: str
    time_ms: int

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        self._check_kind()
        check_range("hold_id", self.hold_id, 1)
        check_one_of("action", self.action, HOLD_ACTIONS)
        check_one_of("target", self.target, HOLD_TARGETS)
        check_id("case_id", self.case_id, optional=True)
        if self.device_id is not None:
            check_device_id("device_id", self.device_id)
        check_id("recording_id", self.recording_id, optional=True)
        check_id("principal", self.principal)
        check_name("role", self.role)
        check_hex32("reason_sha256", self.reason_sha256)
        check_time("time_ms", self.time_ms)
        # One shape per target, so a leaf cannot name a case and a recording at once.
        if self.target == "case" and (self.case_id is None or self.device_id or self.recording_id):
            raise Invalid("a case hold names the case and no recording")
        if self.target == "recording" and (self.case_id is not None or self.device_id is None
                                           or self.recording_id is None):
            raise Invalid("a recording hold names the device and the recording, and no case")


AnyLeaf = EntryLeaf | AccessLeaf | LinkLeaf | KeyLeaf | ExpiryLeaf | HoldLeaf

LEAF_TYPES: dict[str, type[AnyLeaf]] = {
    cls.KIND: cls for cls in (EntryLeaf, AccessLeaf, LinkLeaf, KeyLeaf, ExpiryLeaf, HoldLeaf)
}


def parse_leaf(data: bytes) -> AnyLeaf:
    """Parse leaf bytes by their ``leaf`` field; raise :class:`SchemaError` when they are not a leaf."""
    obj = parse_canonical(data, max_bytes=MAX_LEAF_BYTES)
    cls = LEAF_TYPES.get(obj.get("leaf"))  # type: ignore[arg-type]
    if cls is None:
        raise SchemaError(f"unknown leaf kind {obj.get('leaf')!r}", code="unknown_leaf")
    return cls.from_dict(obj)
