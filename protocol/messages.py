"""Custody's wire types, exactly as the wire contract in DESIGN.md describes them.

Every type is a frozen dataclass validated when built, with a ``v`` version field, one
``to_bytes`` / ``from_bytes`` pair (canonical JSON) and, for signed types, a payload type that
is part of the signed bytes. Chain entries are :class:`ChunkManifest` and
:class:`RecordingEvent`; they share the device-wide sequence and the ``prev`` hash chain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from protocol.envelope import Envelope
from protocol.errors import SchemaError, SignatureError
from protocol.keys import ALGORITHMS, SigningKey, VerifyKey, device_id_for
from protocol.schema import (
    Invalid,
    Message,
    check_device_id,
    check_hex32,
    check_id,
    check_key_id,
    check_name,
    check_nonce,
    check_one_of,
    check_range,
    check_text,
    check_time,
)

#: ``prev`` of the entry at sequence 0: 32 zero bytes, hex.
GENESIS_PREV = "00" * 32

#: Longest chunk the agent may cut (60 s) plus slack; anything longer is not a chunk.
MAX_CHUNK_DURATION_MS = 65_000
#: Largest chunk body the protocol admits (1 GiB); deployments set tighter limits.
MAX_CHUNK_SIZE = 1 << 30


class SignedMessage(Message):
    """A message that travels inside a signed :class:`Envelope`."""

    def sign(self, key: SigningKey) -> Envelope:
        """Encode canonically and sign with ``key``."""
        return Envelope.sign(self.PAYLOAD_TYPE, self.to_bytes(), key)

    @classmethod
    def open(cls, envelope: Envelope, key: VerifyKey) -> Self:
        """Verify ``envelope`` with ``key`` (type, key id, signature), then parse its payload."""
        envelope.verify(key, payload_type=cls.PAYLOAD_TYPE)
        return cls.from_bytes(envelope.payload)

    @classmethod
    def peek(cls, envelope: Envelope) -> Self:
        """Parse the payload WITHOUT checking the signature (to find which key should check it)."""
        if envelope.payload_type != cls.PAYLOAD_TYPE:
            raise SignatureError(
                f"payload type is {envelope.payload_type!r}, expected {cls.PAYLOAD_TYPE!r}",
                code="wrong_payload_type",
            )
        return cls.from_bytes(envelope.payload)


# --------------------------------------------------------------------------------------------
# Chain entries


@dataclass(frozen=True, slots=True)
class CodecInfo(Message):
    """What a chunk holds, so the server's cheap media check has something to compare with."""

    container: str
    video: str
    width: int
    height: int
    fps_num: int
    fps_den: int
    video_frames: int
    audio: str | None
    audio_rate: int | None
    audio_samples: int | None

    def _check(self) -> None:
        check_one_of("container", self.container, {"mp4"})
        check_one_of("video", self.video, {"h264", "h265"})
        check_range("width", self.width, 16, 8192)
        check_range("height", self.height, 16, 8192)
        check_range("fps_num", self.fps_num, 1, 240_000)
        check_range("fps_den", self.fps_den, 1, 1001 * 1000)
        check_range("video_frames", self.video_frames, 0, 60 * 240 * 2)
        if self.audio is None:
            if self.audio_rate is not None or self.audio_samples is not None:
                raise Invalid("audio_rate and audio_samples must be null without audio")
        else:
            check_one_of("audio", self.audio, {"aac", "opus"})
            check_range("audio_rate", self.audio_rate, 8000, 192_000)
            check_range("audio_samples", self.audio_samples, 0, 192_000 * 70)


class Entry(SignedMessage):
    """Common shape of chain entries: ``device_id``, ``seq``, ``prev``, ``recording_id``."""

    device_id: str
    seq: int
    prev: str
    recording_id: str

    def _check_entry(self) -> None:
        check_device_id("device_id", self.device_id)
        check_range("seq", self.seq, 0)
        check_hex32("prev", self.prev)
        check_id("recording_id", self.recording_id)
        if self.seq == 0 and self.prev != GENESIS_PREV:
            raise Invalid("the entry at seq 0 must have prev = 32 zero bytes", "bad_genesis")


@dataclass(frozen=True, slots=True)
class ChunkManifest(Entry):
    """One chunk of footage: who, when, how long, and the SHA-256 of its exact bytes."""

    PAYLOAD_TYPE: ClassVar[str] = "custody/chunk-manifest/v1"

    v: int
    device_id: str
    seq: int
    prev: str
    recording_id: str
    index: int
    start_ms: int
    duration_ms: int
    sha256: str
    size: int
    officer_id: str | None
    case_step: str | None
    pre_event: bool
    codec: CodecInfo

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        self._check_entry()
        check_range("index", self.index, 0)
        check_time("start_ms", self.start_ms)
        check_range("duration_ms", self.duration_ms, 1, MAX_CHUNK_DURATION_MS)
        check_hex32("sha256", self.sha256)
        check_range("size", self.size, 1, MAX_CHUNK_SIZE)
        check_id("officer_id", self.officer_id, optional=True)
        check_id("case_step", self.case_step, optional=True)

    @property
    def end_ms(self) -> int:
        """Device-clock time the chunk ends."""
        return self.start_ms + self.duration_ms


RECORDING_EVENTS = frozenset({"start", "stop", "interrupted"})


@dataclass(frozen=True, slots=True)
class RecordingEvent(Entry):
    """A recording's start, stop, or interruption by a crash (found at the next start-up)."""

    PAYLOAD_TYPE: ClassVar[str] = "custody/recording-event/v1"

    v: int
    device_id: str
    seq: int
    prev: str
    recording_id: str
    event: str
    time_ms: int
    officer_id: str | None
    case_step: str | None
    chunks: int | None
    reason: str | None

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        self._check_entry()
        check_one_of("event", self.event, RECORDING_EVENTS)
        check_time("time_ms", self.time_ms)
        check_id("officer_id", self.officer_id, optional=True)
        check_id("case_step", self.case_step, optional=True)
        if self.event == "start":
            if self.chunks is not None:
                raise Invalid("a start event carries no chunk count")
        else:
            check_range("chunks", self.chunks, 0)
        check_text("reason", self.reason, optional=True, max_len=200)


ENTRY_TYPES: dict[str, type[ChunkManifest] | type[RecordingEvent]] = {
    ChunkManifest.PAYLOAD_TYPE: ChunkManifest,
    RecordingEvent.PAYLOAD_TYPE: RecordingEvent,
}


def parse_entry(envelope: Envelope) -> ChunkManifest | RecordingEvent:
    """Parse an entry envelope's payload by its type (signature NOT checked: see :func:`open_entry`)."""
    cls = ENTRY_TYPES.get(envelope.payload_type)
    if cls is None:
        raise SignatureError(f"payload type {envelope.payload_type!r} is not a chain entry", code="wrong_payload_type")
    return cls.from_bytes(envelope.payload)


def open_entry(envelope: Envelope, key: VerifyKey) -> ChunkManifest | RecordingEvent:
    """Verify an entry envelope with the device key and parse it; the entry must name that device."""
    entry = parse_entry(envelope)
    envelope.verify(key)
    if entry.device_id != key.device_id:
        raise SignatureError(
            f"entry names device {entry.device_id} but is signed by the key of {key.device_id}", code="wrong_device"
        )
    return entry


# --------------------------------------------------------------------------------------------
# Status, commands and receipts


RECORDING_STATES = frozenset({"idle", "armed", "recording"})


@dataclass(frozen=True, slots=True)
class CheckpointRef(Message):
    """The latest transparency-log tree head a device has seen: origin, size and root hash."""

    origin: str
    size: int
    root: str

    def _check(self) -> None:
        check_text("origin", self.origin, max_len=200)
        check_range("size", self.size, 0)
        check_hex32("root", self.root)


@dataclass(frozen=True, slots=True)
class DeviceStatus(SignedMessage):
    """Signed every N seconds: health, buffer, and continuity (last committed seq and chain head)."""

    PAYLOAD_TYPE: ClassVar[str] = "custody/device-status/v1"

    v: int
    device_id: str
    time_ms: int
    last_seq: int | None
    head: str | None
    state: str
    recording_id: str | None
    officer_id: str | None
    case_step: str | None
    battery_pct: int | None
    storage_free: int
    buffered_chunks: int
    buffered_bytes: int
    checkpoint: CheckpointRef | None
    firmware: str
    config_version: str
    alarms: tuple[str, ...]

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        check_device_id("device_id", self.device_id)
        check_time("time_ms", self.time_ms)
        check_range("last_seq", self.last_seq, 0, optional=True)
        check_hex32("head", self.head, optional=True)
        if (self.last_seq is None) != (self.head is None):
            raise Invalid("last_seq and head are both set or both null")
        check_one_of("state", self.state, RECORDING_STATES)
        check_id("recording_id", self.recording_id, optional=True)
        check_id("officer_id", self.officer_id, optional=True)
        check_id("case_step", self.case_step, optional=True)
        check_range("battery_pct", self.battery_pct, 0, 100, optional=True)
        check_range("storage_free", self.storage_free, 0)
        check_range("buffered_chunks", self.buffered_chunks, 0)
        check_range("buffered_bytes", self.buffered_bytes, 0)
        check_text("firmware", self.firmware, max_len=64)
        check_text("config_version", self.config_version, max_len=64)
        if len(self.alarms) > 32:
            raise Invalid("at most 32 alarms")
        for alarm in self.alarms:
            check_name("alarm", alarm)


class CommandKind:
    """The closed set of command kinds this build knows. A device acks any other kind ``unsupported``."""

    START = "start"
    STOP = "stop"
    SELECT_STEP = "select_step"
    ASSIGN_OFFICER = "assign_officer"
    CONFIG = "config"
    PING = "ping"
    LIVE_VIEW_START = "live_view_start"
    LIVE_VIEW_STOP = "live_view_stop"

    ALL: ClassVar[frozenset[str]] = frozenset(
        {START, STOP, SELECT_STEP, ASSIGN_OFFICER, CONFIG, PING, LIVE_VIEW_START, LIVE_VIEW_STOP}
    )


#: Longest validity a command may have: a stale command must not be replayable later.
MAX_COMMAND_TTL_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Command(SignedMessage):
    """Server to device, signed by the server key, with an expiry and a nonce against replay.

    ``kind`` is any lowercase name so that a newer server's command still parses on an older
    device, which then refuses it with ``unsupported`` rather than as garbage.
    """

    PAYLOAD_TYPE: ClassVar[str] = "custody/command/v1"

    v: int
    id: str
    device_id: str
    kind: str
    issued_ms: int
    expires_ms: int
    nonce: str
    params: dict[str, Any] = field(hash=False)

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        check_id("id", self.id)
        check_device_id("device_id", self.device_id)
        check_name("kind", self.kind)
        check_time("issued_ms", self.issued_ms)
        check_time("expires_ms", self.expires_ms)
        if not self.issued_ms < self.expires_ms <= self.issued_ms + MAX_COMMAND_TTL_MS:
            raise Invalid("expires_ms must be after issued_ms and within 24 h of it", "bad_expiry")
        check_nonce("nonce", self.nonce)


ACK_STATUSES = frozenset({"ok", "refused", "unsupported", "failed"})


@dataclass(frozen=True, slots=True)
class CommandAck(SignedMessage):
    """Device to server: the outcome of a command, and why when it was not carried out."""

    PAYLOAD_TYPE: ClassVar[str] = "custody/command-ack/v1"

    v: int
    device_id: str
    command_id: str
    time_ms: int
    status: str
    reason: str | None
    result: dict[str, Any] = field(hash=False)

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        check_device_id("device_id", self.device_id)
        check_id("command_id", self.command_id)
        check_time("time_ms", self.time_ms)
        check_one_of("status", self.status, ACK_STATUSES)
        check_text("reason", self.reason, optional=True, max_len=300)
        if self.status != "ok" and not self.reason:
            raise Invalid("an ack that is not ok must say why")


@dataclass(frozen=True, slots=True)
class Receipt(SignedMessage):
    """The server's signed statement that an entry and its bytes were verified and stored."""

    PAYLOAD_TYPE: ClassVar[str] = "custody/receipt/v1"

    v: int
    device_id: str
    seq: int
    entry_hash: str
    object_key: str
    stored_sha256: str | None
    server_time_ms: int
    log_index: int | None
    tree_size: int | None
    server_key_id: str

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        check_device_id("device_id", self.device_id)
        check_range("seq", self.seq, 0)
        check_hex32("entry_hash", self.entry_hash)
        check_text("object_key", self.object_key, max_len=256)
        # Recording events have no bytes: their receipts carry no object and no stored hash.
        check_hex32("stored_sha256", self.stored_sha256, optional=True)
        check_time("server_time_ms", self.server_time_ms)
        check_range("log_index", self.log_index, 0, optional=True)
        check_range("tree_size", self.tree_size, 1, optional=True)
        if (self.log_index is None) != (self.tree_size is None):
            raise Invalid("log_index and tree_size are both set or both null")
        if self.log_index is not None and self.tree_size is not None and self.log_index >= self.tree_size:
            raise Invalid("log_index must be below tree_size")
        check_key_id("server_key_id", self.server_key_id)


# --------------------------------------------------------------------------------------------
# Enrollment


@dataclass(frozen=True, slots=True)
class EnrollmentRequest(SignedMessage):
    """Device to server, signed by the new device key itself (proof that the device holds it)."""

    PAYLOAD_TYPE: ClassVar[str] = "custody/enrollment-request/v1"

    v: int
    token: str
    alg: str
    public_key: bytes
    serial: str
    model: str
    firmware: str
    time_ms: int
    nonce: str

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        check_text("token", self.token, max_len=200)
        check_one_of("alg", self.alg, ALGORITHMS)
        if len(self.public_key) != 32:
            raise Invalid("public_key must be 32 bytes", "bad_key")
        check_text("serial", self.serial, max_len=64)
        check_text("model", self.model, max_len=64)
        check_text("firmware", self.firmware, max_len=64)
        check_time("time_ms", self.time_ms)
        check_nonce("nonce", self.nonce)

    @property
    def device_id(self) -> str:
        """The id the key gives this device."""
        return device_id_for(self.public_key)

    @property
    def verify_key(self) -> VerifyKey:
        """The key the request claims (and must be signed with)."""
        return VerifyKey(self.alg, self.public_key)

    @classmethod
    def open_self_signed(cls, envelope: Envelope) -> EnrollmentRequest:
        """Parse and check the request is signed by the key it carries."""
        request = cls.peek(envelope)
        envelope.verify(request.verify_key, payload_type=cls.PAYLOAD_TYPE)
        return request


@dataclass(frozen=True, slots=True)
class DeviceCertificate(SignedMessage):
    """The server's statement binding a device id to its public key (and serial, model)."""

    PAYLOAD_TYPE: ClassVar[str] = "custody/device-certificate/v1"

    v: int
    device_id: str
    alg: str
    public_key: bytes
    serial: str
    model: str
    issued_ms: int
    issuer_key_id: str

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        check_device_id("device_id", self.device_id)
        check_one_of("alg", self.alg, ALGORITHMS)
        if len(self.public_key) != 32:
            raise Invalid("public_key must be 32 bytes", "bad_key")
        if device_id_for(self.public_key) != self.device_id:
            raise Invalid("device_id is not the id of public_key", "wrong_device")
        check_text("serial", self.serial, max_len=64)
        check_text("model", self.model, max_len=64)
        check_time("issued_ms", self.issued_ms)
        check_key_id("issuer_key_id", self.issuer_key_id)

    @property
    def verify_key(self) -> VerifyKey:
        """The device's public key."""
        return VerifyKey(self.alg, self.public_key)


@dataclass(frozen=True, slots=True)
class ServerKey(Message):
    """One server signing key, current or earlier, as a device or verifier learns it."""

    key_id: str
    alg: str
    public_key: bytes
    created_ms: int
    retired_ms: int | None

    def _check(self) -> None:
        check_key_id("key_id", self.key_id)
        check_one_of("alg", self.alg, ALGORITHMS)
        # Checked here so that VerifyKey below cannot raise its own (SignatureError) complaint.
        if len(self.public_key) != 32:
            raise Invalid("public_key must be 32 bytes", "bad_key")
        if VerifyKey(self.alg, self.public_key).key_id != self.key_id:
            raise Invalid("key_id does not match public_key", "bad_key")
        check_time("created_ms", self.created_ms)
        check_time("retired_ms", self.retired_ms, optional=True)

    @property
    def verify_key(self) -> VerifyKey:
        """As a :class:`VerifyKey`."""
        return VerifyKey(self.alg, self.public_key)


@dataclass(frozen=True, slots=True)
class EnrollmentAnswer(SignedMessage):
    """Server to device after enrollment, signed by the server key the token pinned."""

    PAYLOAD_TYPE: ClassVar[str] = "custody/enrollment-answer/v1"

    v: int
    device_id: str
    certificate: bytes
    server_keys: tuple[ServerKey, ...]
    api_url: str
    mqtt_url: str | None
    mqtt_username: str | None
    mqtt_password: str | None
    issued_ms: int

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        check_device_id("device_id", self.device_id)
        if not self.server_keys:
            raise Invalid("server_keys must list at least the current key")
        check_text("api_url", self.api_url, max_len=512)
        check_text("mqtt_url", self.mqtt_url, optional=True, max_len=512)
        check_text("mqtt_username", self.mqtt_username, optional=True, max_len=128)
        check_text("mqtt_password", self.mqtt_password, optional=True, max_len=256)
        check_time("issued_ms", self.issued_ms)


@dataclass(frozen=True, slots=True)
class KeyRotation(SignedMessage):
    """A device's new key, signed by its current key: the only way a device key changes."""

    PAYLOAD_TYPE: ClassVar[str] = "custody/key-rotation/v1"

    v: int
    device_id: str
    old_key_id: str
    alg: str
    new_public_key: bytes
    time_ms: int
    nonce: str

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        check_device_id("device_id", self.device_id)
        check_key_id("old_key_id", self.old_key_id)
        check_one_of("alg", self.alg, ALGORITHMS)
        if len(self.new_public_key) != 32:
            raise Invalid("new_public_key must be 32 bytes", "bad_key")
        check_time("time_ms", self.time_ms)
        check_nonce("nonce", self.nonce)


SIGNED_TYPES: dict[str, type[SignedMessage]] = {
    cls.PAYLOAD_TYPE: cls
    for cls in (
        ChunkManifest,
        RecordingEvent,
        DeviceStatus,
        Command,
        CommandAck,
        Receipt,
        EnrollmentRequest,
        DeviceCertificate,
        EnrollmentAnswer,
        KeyRotation,
    )
}


def payload_class(payload_type: str) -> type[SignedMessage]:
    """The message class for a payload type, or :class:`SchemaError` for an unknown one."""
    try:
        return SIGNED_TYPES[payload_type]
    except KeyError:
        raise SchemaError(f"unknown payload type {payload_type!r}", code="unknown_payload_type") from None
