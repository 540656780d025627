"""Fixed test keys and one sample of every wire type, shared by the golden files, the bad-message
corpus and the tests.

Ed25519 signatures are deterministic, so messages signed with these keys have stable bytes:
``golden_files()`` is what ``tests/golden/regenerate.py`` writes and what ``test_golden.py``
compares the committed files with. Changing anything here that reaches those bytes changes the
wire contract (see tests/golden/README.md).
"""

from __future__ import annotations

import json
from typing import Any

from protocol.canonical import b64e
from protocol.checkpoint import SIG_COSIGNATURE_V1, Checkpoint, NoteVerifier, cosign_line, sign_checkpoint
from protocol.enrollment import EnrollmentToken
from protocol.httpsig import sign_request
from protocol.keys import ED25519, SigningKey
from protocol.leaves import (
    AccessLeaf,
    AnyLeaf,
    EntryLeaf,
    ExpiryLeaf,
    HoldLeaf,
    KeyLeaf,
    LinkLeaf,
    keys_sha256,
    text_sha256,
)
from protocol.merkle import MemoryTree
from protocol.messages import (
    GENESIS_PREV,
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

# -- keys (fixed seeds: never use these anywhere but tests) ------------------------------------

DEVICE_KEY = SigningKey.from_private_bytes(bytes(range(32)))
SERVER_KEY = SigningKey.from_private_bytes(bytes(range(32, 64)))
OTHER_DEVICE_KEY = SigningKey.from_private_bytes(bytes(range(64, 96)))
NEW_DEVICE_KEY = SigningKey.from_private_bytes(bytes(range(96, 128)))
WITNESS_KEY = SigningKey.from_private_bytes(bytes(range(128, 160)))
OLD_SERVER_KEY = SigningKey.from_private_bytes(bytes(range(160, 192)))
ROGUE_SERVER_KEY = SigningKey.from_private_bytes(bytes(range(192, 224)))

DEVICE_ID = DEVICE_KEY.public.device_id
OTHER_DEVICE_ID = OTHER_DEVICE_KEY.public.device_id

#: 2026-01-01T00:00:00Z in milliseconds.
T0 = 1_767_225_600_000

LOG_NAME = "custody.example/log"
WITNESS_NAME = "witness.example/w1"
LOG_VERIFIER = NoteVerifier(LOG_NAME, SERVER_KEY.public)
WITNESS_VERIFIER = NoteVerifier(WITNESS_NAME, WITNESS_KEY.public, SIG_COSIGNATURE_V1)

API_URL = "https://custody.example/api"
TOKEN = EnrollmentToken("c2VjcmV0LXRva2VuLWZvci10ZXN0cw", SERVER_KEY.public.fingerprint, API_URL)

HTTP_METHOD = "POST"
HTTP_PATH = "/api/v1/devices/uploads?seq=1"
HTTP_BODY = b'{"seq":1}'
HTTP_NONCE = "0123456789abcdef0123456789abcdef"


# -- messages ------------------------------------------------------------------------------------

CODEC = CodecInfo(
    container="mp4",
    video="h264",
    width=1920,
    height=1080,
    fps_num=30000,
    fps_den=1001,
    video_frames=150,
    audio="aac",
    audio_rate=48000,
    audio_samples=240_000,
)


def recording_start(seq: int = 0, prev: str = GENESIS_PREV, recording_id: str = "rec-0001") -> RecordingEvent:
    """A start event (seq 0 by default: the genesis entry of the golden chain)."""
    return RecordingEvent(
        v=1,
        device_id=DEVICE_ID,
        seq=seq,
        prev=prev,
        recording_id=recording_id,
        event="start",
        time_ms=T0 + seq * 5000,
        officer_id="officer-007",
        case_step="case-2026-0001:inspection",
        chunks=None,
        reason=None,
    )


def recording_stop(seq: int, prev: str, chunks: int, recording_id: str = "rec-0001") -> RecordingEvent:
    """A stop event."""
    return RecordingEvent(
        v=1,
        device_id=DEVICE_ID,
        seq=seq,
        prev=prev,
        recording_id=recording_id,
        event="stop",
        time_ms=T0 + seq * 5000,
        officer_id="officer-007",
        case_step="case-2026-0001:inspection",
        chunks=chunks,
        reason="按下停止键",
    )


def manifest(seq: int = 1, prev: str | None = None, index: int = 0, recording_id: str = "rec-0001",
             device_id: str = DEVICE_ID) -> ChunkManifest:
    """A chunk manifest; ``prev`` defaults to the hash of the golden start event."""
    if prev is None:
        prev = recording_start().sign(DEVICE_KEY).hash.hex()
    return ChunkManifest(
        v=1,
        device_id=device_id,
        seq=seq,
        prev=prev,
        recording_id=recording_id,
        index=index,
        start_ms=T0 + seq * 5000,
        duration_ms=5000,
        sha256=bytes([seq % 256]).hex() * 32,
        size=1_048_576 + seq,
        officer_id="officer-007",
        case_step="case-2026-0001:inspection",
        pre_event=index == 0,
        codec=CODEC,
    )


def device_status() -> DeviceStatus:
    """A status while recording, with continuity and the last checkpoint seen."""
    head = manifest().sign(DEVICE_KEY).hash.hex()
    return DeviceStatus(
        v=1,
        device_id=DEVICE_ID,
        time_ms=T0 + 6000,
        last_seq=1,
        head=head,
        state="recording",
        recording_id="rec-0001",
        officer_id="officer-007",
        case_step="case-2026-0001:inspection",
        battery_pct=87,
        storage_free=12_884_901_888,
        buffered_chunks=2,
        buffered_bytes=2_097_153,
        checkpoint=CheckpointRef(origin=LOG_NAME, size=41, root="ab" * 32),
        firmware="custody-agent 0.1.0 — 测试",
        config_version="cfg-3",
        alarms=("low_storage",),
    )


def command() -> Command:
    """A start command from the server, with nested params."""
    return Command(
        v=1,
        id="cmd-0001",
        device_id=DEVICE_ID,
        kind="start",
        issued_ms=T0,
        expires_ms=T0 + 60_000,
        nonce="00112233445566778899aabbccddeeff",
        params={"case_step": "case-2026-0001:inspection", "pre_event_s": 30, "tags": ["现场检查", None, True]},
    )


def command_ack() -> CommandAck:
    """A refusal, with a reason in Chinese."""
    return CommandAck(
        v=1,
        device_id=DEVICE_ID,
        command_id="cmd-0001",
        time_ms=T0 + 1500,
        status="refused",
        reason="设备存储已满",
        result={"storage_free": 0},
    )


def receipt() -> Receipt:
    """The server's receipt for the golden manifest."""
    m = manifest()
    return Receipt(
        v=1,
        device_id=DEVICE_ID,
        seq=m.seq,
        entry_hash=m.sign(DEVICE_KEY).hash.hex(),
        object_key=f"footage/{DEVICE_ID}/1/{m.sha256}.mp4",
        stored_sha256=m.sha256,
        server_time_ms=T0 + 7000,
        log_index=41,
        tree_size=42,
        server_key_id=SERVER_KEY.key_id,
    )


def enrollment_request() -> EnrollmentRequest:
    """The device's self-signed enrollment request."""
    return EnrollmentRequest(
        v=1,
        token=TOKEN.to_string(),
        alg=ED25519,
        public_key=DEVICE_KEY.public.raw,
        serial="SN-0001",
        model="Raspberry Pi 5 · 执法记录仪",
        firmware="custody-agent 0.1.0",
        time_ms=T0 - 86_400_000,
        nonce="ffeeddccbbaa99887766554433221100",
    )


def device_certificate(public_key: bytes | None = None, device_id: str | None = None) -> DeviceCertificate:
    """The server's certificate for the device key (or another key)."""
    raw = DEVICE_KEY.public.raw if public_key is None else public_key
    return DeviceCertificate(
        v=1,
        device_id=DEVICE_ID if device_id is None else device_id,
        alg=ED25519,
        public_key=raw,
        serial="SN-0001",
        model="Raspberry Pi 5 · 执法记录仪",
        issued_ms=T0 - 86_000_000,
        issuer_key_id=SERVER_KEY.key_id,
    )


def server_key(key: SigningKey, created_ms: int, retired_ms: int | None) -> ServerKey:
    """A ServerKey entry."""
    return ServerKey(key_id=key.key_id, alg=ED25519, public_key=key.public.raw, created_ms=created_ms,
                     retired_ms=retired_ms)


def enrollment_answer(certificate: bytes | None = None, keys: tuple[SigningKey, ...] = (SERVER_KEY, OLD_SERVER_KEY),
                      device_id: str = DEVICE_ID) -> EnrollmentAnswer:
    """The answer, holding the signed certificate and the current and an earlier server key."""
    cert = device_certificate().sign(SERVER_KEY).raw if certificate is None else certificate
    server_keys = tuple(
        server_key(k, T0 - 10 * 86_400_000, None) if i == 0 else server_key(k, T0 - 400 * 86_400_000,
                                                                               T0 - 10 * 86_400_000)
        for i, k in enumerate(keys)
    )
    return EnrollmentAnswer(
        v=1,
        device_id=device_id,
        certificate=cert,
        server_keys=server_keys,
        api_url=API_URL,
        mqtt_url="mqtts://custody.example:8883",
        mqtt_username=device_id,
        mqtt_password="mqtt-secret-for-tests",
        issued_ms=T0 - 86_000_000,
    )


def key_rotation() -> KeyRotation:
    """The device moving to its new key, signed by the current one."""
    return KeyRotation(
        v=1,
        device_id=DEVICE_ID,
        old_key_id=DEVICE_KEY.key_id,
        alg=ED25519,
        new_public_key=NEW_DEVICE_KEY.public.raw,
        time_ms=T0 + 30 * 86_400_000,
        nonce="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    )


def signed_samples() -> list[tuple[str, SignedMessage, SigningKey]]:
    """One sample of each signed type with the key that signs it."""
    return [
        ("chunk_manifest", manifest(), DEVICE_KEY),
        ("recording_event", recording_start(), DEVICE_KEY),
        ("device_status", device_status(), DEVICE_KEY),
        ("command", command(), SERVER_KEY),
        ("command_ack", command_ack(), DEVICE_KEY),
        ("receipt", receipt(), SERVER_KEY),
        ("enrollment_request", enrollment_request(), DEVICE_KEY),
        ("device_certificate", device_certificate(), SERVER_KEY),
        ("enrollment_answer", enrollment_answer(), SERVER_KEY),
        ("key_rotation", key_rotation(), DEVICE_KEY),
    ]


# -- transparency log ----------------------------------------------------------------------------


def log_tree(size: int = 42) -> MemoryTree:
    """A log whose leaves are fixed byte strings."""
    tree = MemoryTree()
    for i in range(size):
        tree.append(f"leaf {i}".encode())
    return tree


def checkpoint() -> Checkpoint:
    """The tree head of :func:`log_tree`."""
    tree = log_tree()
    return Checkpoint(LOG_NAME, tree.size, tree.root())


COSIGN_TIME = (T0 + 7000) // 1000


def signed_checkpoint_text() -> str:
    """The log-signed checkpoint note."""
    return sign_checkpoint(checkpoint(), LOG_NAME, SERVER_KEY).text()


def cosigned_checkpoint_text() -> str:
    """The same note with a witness cosignature."""
    note = sign_checkpoint(checkpoint(), LOG_NAME, SERVER_KEY)
    return note.with_line(cosign_line(note.body, WITNESS_NAME, WITNESS_KEY, COSIGN_TIME)).text()


# -- HTTP ------------------------------------------------------------------------------------------


def http_request_file(key: SigningKey = DEVICE_KEY, method: str = HTTP_METHOD, path: str = HTTP_PATH,
                      body: bytes = HTTP_BODY, time_ms: int = T0, nonce: str = HTTP_NONCE) -> dict[str, Any]:
    """A signed request as a JSON-able record: the request, the headers, and when it was sent."""
    return {
        "method": method,
        "path": path,
        "body": b64e(body),
        "now_ms": time_ms,
        "headers": sign_request(key, method, path, body, time_ms, nonce=nonce),
    }


def pretty(obj: object) -> bytes:
    """Stable human-readable JSON (for golden and corpus files that are records, not wire bytes)."""
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


# -- log leaves ------------------------------------------------------------------------------


def leaf_samples() -> list[tuple[str, AnyLeaf]]:
    """One leaf of every kind (a hold twice: set and lifted), as the log stores its bytes."""
    m = manifest()
    entry_hash = m.sign(DEVICE_KEY).hash.hex()
    return [
        ("entry", EntryLeaf(v=1, leaf="entry", device_id=DEVICE_ID, seq=m.seq, entry_hash=entry_hash,
                            stored_sha256=m.sha256, time_ms=T0 + 7000)),
        ("access", AccessLeaf(v=1, leaf="access", access_id=3, kind="view", principal="user:17", device_id=DEVICE_ID,
                              recording_id="rec-0001", case_id=None, objects=1,
                              objects_sha256=keys_sha256([f"footage/{DEVICE_ID}/1/{m.sha256}.mp4"]),
                              reason_sha256=text_sha256("复核现场检查录像"), time_ms=T0 + 60_000)),
        ("link", LinkLeaf(v=1, leaf="link", link_id=5, action="link", case_id="12", step_id="c1-inspect",
                          device_id=DEVICE_ID, recording_id="rec-0001", from_ms=None, until_ms=None,
                          principal="user:17", time_ms=T0 + 120_000)),
        ("key", KeyLeaf(v=1, leaf="key", event="device_key", key_id=DEVICE_KEY.key_id,
                        fingerprint=DEVICE_KEY.public.fingerprint, device_id=DEVICE_ID, state=None, cutoff_seq=None,
                        time_ms=T0 - 86_400_000)),
        ("expiry", ExpiryLeaf(v=1, leaf="expiry", device_id=DEVICE_ID, seq=m.seq, stored_sha256=m.sha256,
                              time_ms=T0 + 183 * 86_400_000)),
        ("hold_set", HoldLeaf(v=1, leaf="hold", hold_id=2, action="set", target="recording", case_id=None,
                              device_id=DEVICE_ID, recording_id="rec-0001", principal="user:21",
                              role="legal_reviewer", reason_sha256=text_sha256("行政复议申请：保全录像"),
                              time_ms=T0 + 180_000)),
        ("hold_lift", HoldLeaf(v=1, leaf="hold", hold_id=2, action="lift", target="recording", case_id=None,
                               device_id=DEVICE_ID, recording_id="rec-0001", principal="user:21",
                               role="legal_reviewer", reason_sha256=text_sha256("复议决定已生效"),
                               time_ms=T0 + 30 * 86_400_000)),
    ]


# -- golden files ------------------------------------------------------------------------------


def golden_files() -> dict[str, bytes]:
    """File name -> exact bytes of every golden file."""
    files = {f"{stem}.envelope.json": msg.sign(key).raw for stem, msg, key in signed_samples()}
    files["enrollment_token.txt"] = TOKEN.to_string().encode("ascii")
    files["checkpoint.note"] = signed_checkpoint_text().encode("utf-8")
    files["checkpoint_cosigned.note"] = cosigned_checkpoint_text().encode("utf-8")
    files["log.vkey"] = (LOG_VERIFIER.vkey() + "\n").encode("ascii")
    files["witness.vkey"] = (WITNESS_VERIFIER.vkey() + "\n").encode("ascii")
    files["http_request.json"] = pretty(http_request_file())
    files.update({f"{stem}.leaf.json": leaf.to_bytes() for stem, leaf in leaf_samples()})
    return files

