"""Hypothesis strategies that generate valid values of every Custody wire type."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from protocol.canonical import MAX_SAFE_INT
from protocol.keys import ED25519, SigningKey, device_id_for
from protocol.messages import (
    ACK_STATUSES,
    GENESIS_PREV,
    MAX_CHUNK_DURATION_MS,
    MAX_CHUNK_SIZE,
    MAX_COMMAND_TTL_MS,
    RECORDING_STATES,
    CheckpointRef,
    ChunkManifest,
    CodecInfo,
    Command,
    CommandAck,
    DeviceCertificate,
    DeviceStatus,
    EnrollmentAnswer,
    EnrollmentRequest,
    KeyRotation,
    Receipt,
    RecordingEvent,
    ServerKey,
    SignedMessage,
)
from protocol.schema import MAX_TIME_MS, MIN_TIME_MS

#: Moderate example counts, no deadline and no example database: the unit suite stays fast, writes
#: no files, and does not flake on a slow CI machine.
PROPERTY = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# -- scalars -------------------------------------------------------------------------------------

safe_ints = st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
non_negative = st.integers(0, MAX_SAFE_INT)
times = st.integers(MIN_TIME_MS, MAX_TIME_MS - 1)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True)
names = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
hex32 = st.binary(min_size=32, max_size=32).map(bytes.hex)
key_bytes = st.binary(min_size=32, max_size=32)
device_ids = key_bytes.map(device_id_for)
key_ids = st.binary(min_size=8, max_size=8).map(bytes.hex)
nonces = st.binary(min_size=8, max_size=32).map(bytes.hex)
signing_keys = key_bytes.map(SigningKey.from_private_bytes)

#: Any character JSON can carry as UTF-8 (everything but lone surrogates).
any_char = st.characters(exclude_categories=["Cs"])
#: What ``check_text`` admits: no control characters below U+0020.
text_char = st.characters(min_codepoint=0x20, exclude_categories=["Cs"])


def text(max_size: int) -> st.SearchStrategy[str]:
    """Free text as messages admit it (unicode, astral, no C0 controls)."""
    return st.text(text_char, max_size=max_size)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``None`` or a value."""
    return st.none() | strategy


def json_objects(depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    """Command params / ack results: name-keyed objects of depth at most 4, as the schema allows."""
    leaves = st.none() | st.booleans() | safe_ints | st.text(any_char, max_size=40)
    if depth >= 3:
        values: st.SearchStrategy[Any] = leaves
    else:
        values = leaves | st.lists(leaves, max_size=4) | st.deferred(lambda: json_objects(depth + 1))
    return st.dictionaries(names, values, max_size=5)


# -- messages ------------------------------------------------------------------------------------


@st.composite
def codecs(draw: st.DrawFn) -> CodecInfo:
    audio = draw(st.sampled_from([None, "aac", "opus"]))
    return CodecInfo(
        container="mp4",
        video=draw(st.sampled_from(["h264", "h265"])),
        width=draw(st.integers(16, 8192)),
        height=draw(st.integers(16, 8192)),
        fps_num=draw(st.integers(1, 240_000)),
        fps_den=draw(st.integers(1, 1001 * 1000)),
        video_frames=draw(st.integers(0, 60 * 240 * 2)),
        audio=audio,
        audio_rate=None if audio is None else draw(st.integers(8000, 192_000)),
        audio_samples=None if audio is None else draw(st.integers(0, 192_000 * 70)),
    )


@st.composite
def _seq_prev(draw: st.DrawFn) -> tuple[int, str]:
    seq = draw(st.integers(0, 5) | non_negative)
    return seq, GENESIS_PREV if seq == 0 else draw(hex32)


@st.composite
def manifests(draw: st.DrawFn, device_id: str | None = None) -> ChunkManifest:
    seq, prev = draw(_seq_prev())
    return ChunkManifest(
        v=1,
        device_id=device_id or draw(device_ids),
        seq=seq,
        prev=prev,
        recording_id=draw(ids),
        index=draw(non_negative),
        start_ms=draw(times),
        duration_ms=draw(st.integers(1, MAX_CHUNK_DURATION_MS)),
        sha256=draw(hex32),
        size=draw(st.integers(1, MAX_CHUNK_SIZE)),
        officer_id=draw(optional(ids)),
        case_step=draw(optional(ids)),
        pre_event=draw(st.booleans()),
        codec=draw(codecs()),
    )


@st.composite
def recording_events(draw: st.DrawFn, device_id: str | None = None) -> RecordingEvent:
    seq, prev = draw(_seq_prev())
    event = draw(st.sampled_from(["start", "stop", "interrupted"]))
    return RecordingEvent(
        v=1,
        device_id=device_id or draw(device_ids),
        seq=seq,
        prev=prev,
        recording_id=draw(ids),
        event=event,
        time_ms=draw(times),
        officer_id=draw(optional(ids)),
        case_step=draw(optional(ids)),
        chunks=None if event == "start" else draw(non_negative),
        reason=draw(optional(text(200))),
    )


@st.composite
def statuses(draw: st.DrawFn) -> DeviceStatus:
    last_seq = draw(optional(non_negative))
    return DeviceStatus(
        v=1,
        device_id=draw(device_ids),
        time_ms=draw(times),
        last_seq=last_seq,
        head=None if last_seq is None else draw(hex32),
        state=draw(st.sampled_from(sorted(RECORDING_STATES))),
        recording_id=draw(optional(ids)),
        officer_id=draw(optional(ids)),
        case_step=draw(optional(ids)),
        battery_pct=draw(optional(st.integers(0, 100))),
        storage_free=draw(non_negative),
        buffered_chunks=draw(non_negative),
        buffered_bytes=draw(non_negative),
        checkpoint=draw(optional(st.builds(CheckpointRef, origin=text(200), size=non_negative, root=hex32))),
        firmware=draw(text(64)),
        config_version=draw(text(64)),
        alarms=tuple(draw(st.lists(names, max_size=32))),
    )


@st.composite
def commands(draw: st.DrawFn) -> Command:
    issued = draw(st.integers(MIN_TIME_MS, MAX_TIME_MS - 2))
    expires = draw(st.integers(issued + 1, min(issued + MAX_COMMAND_TTL_MS, MAX_TIME_MS - 1)))
    return Command(
        v=1,
        id=draw(ids),
        device_id=draw(device_ids),
        kind=draw(names),
        issued_ms=issued,
        expires_ms=expires,
        nonce=draw(nonces),
        params=draw(json_objects()),
    )


@st.composite
def acks(draw: st.DrawFn) -> CommandAck:
    status = draw(st.sampled_from(sorted(ACK_STATUSES)))
    reason = draw(optional(text(300))) if status == "ok" else draw(text(300).filter(bool))
    return CommandAck(
        v=1,
        device_id=draw(device_ids),
        command_id=draw(ids),
        time_ms=draw(times),
        status=status,
        reason=reason,
        result=draw(json_objects()),
    )


@st.composite
def receipts(draw: st.DrawFn) -> Receipt:
    logged = draw(st.booleans())
    tree_size = draw(st.integers(1, MAX_SAFE_INT)) if logged else None
    return Receipt(
        v=1,
        device_id=draw(device_ids),
        seq=draw(non_negative),
        entry_hash=draw(hex32),
        object_key=draw(text(256)),
        stored_sha256=draw(optional(hex32)),
        server_time_ms=draw(times),
        log_index=None if tree_size is None else draw(st.integers(0, tree_size - 1)),
        tree_size=tree_size,
        server_key_id=draw(key_ids),
    )


@st.composite
def enrollment_requests(draw: st.DrawFn) -> EnrollmentRequest:
    return EnrollmentRequest(
        v=1,
        token=draw(text(200)),
        alg=ED25519,
        public_key=draw(key_bytes),
        serial=draw(text(64)),
        model=draw(text(64)),
        firmware=draw(text(64)),
        time_ms=draw(times),
        nonce=draw(nonces),
    )


@st.composite
def certificates(draw: st.DrawFn) -> DeviceCertificate:
    raw = draw(key_bytes)
    return DeviceCertificate(
        v=1,
        device_id=device_id_for(raw),
        alg=ED25519,
        public_key=raw,
        serial=draw(text(64)),
        model=draw(text(64)),
        issued_ms=draw(times),
        issuer_key_id=draw(key_ids),
    )


@st.composite
def server_keys(draw: st.DrawFn) -> ServerKey:
    key = draw(signing_keys)
    return ServerKey(
        key_id=key.key_id,
        alg=ED25519,
        public_key=key.public.raw,
        created_ms=draw(times),
        retired_ms=draw(optional(times)),
    )


@st.composite
def enrollment_answers(draw: st.DrawFn) -> EnrollmentAnswer:
    return EnrollmentAnswer(
        v=1,
        device_id=draw(device_ids),
        certificate=draw(st.binary(max_size=600)),
        server_keys=tuple(draw(st.lists(server_keys(), min_size=1, max_size=3))),
        api_url=draw(text(512)),
        mqtt_url=draw(optional(text(512))),
        mqtt_username=draw(optional(text(128))),
        mqtt_password=draw(optional(text(256))),
        issued_ms=draw(times),
    )


@st.composite
def key_rotations(draw: st.DrawFn) -> KeyRotation:
    return KeyRotation(
        v=1,
        device_id=draw(device_ids),
        old_key_id=draw(key_ids),
        alg=ED25519,
        new_public_key=draw(key_bytes),
        time_ms=draw(times),
        nonce=draw(nonces),
    )


#: One strategy per signed wire type, by class name.
SIGNED_STRATEGIES: dict[str, st.SearchStrategy[SignedMessage]] = {
    "ChunkManifest": manifests(),
    "RecordingEvent": recording_events(),
    "DeviceStatus": statuses(),
    "Command": commands(),
    "CommandAck": acks(),
    "Receipt": receipts(),
    "EnrollmentRequest": enrollment_requests(),
    "DeviceCertificate": certificates(),
    "EnrollmentAnswer": enrollment_answers(),
    "KeyRotation": key_rotations(),
}
