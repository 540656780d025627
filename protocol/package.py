"""The case export package: its layout, its signed index, and its proof files (pure).

An export is a ZIP file a court can check offline with nothing but the server's public key. Its
layout (every path is relative to the archive root)::

    index.json                                  ExportIndex, signed by the server (envelope)
    index.html                                  for people: zh-CN and English
    README.txt                                  how to verify
    keys/server-keys.json                       the server's key history (also inside the index)
    log/checkpoint.note                         the checkpoint everything is proved against (+ cosignatures)
    log/checkpoints/<size>.note                 earlier checkpoints of the same log
    log/consistency/<size>.json                 ConsistencyProof from each earlier checkpoint to the package's
    log/witnesses.json                          registered witnesses' verifier keys
    devices/<device>/certificate.json           DeviceCertificate envelope
    devices/<device>/key-rotations/<n>.json     KeyRotation envelopes, in order
    devices/<device>/entries/<seq>.json         every entry of the device's range, exact envelope bytes
    devices/<device>/receipts/<seq>.json        the server's Receipt envelope of each entry
    devices/<device>/proofs/<seq>.json          InclusionProof of each entry's leaf in the checkpoint
    devices/<device>/chunks/<seq>.mp4           the original chunk bytes of the exported recordings
    recordings/<device>-<recording>.mp4         one remuxed, playable MP4 per recording (convenience copy)
    case/audit.json                             the audit report
    case/access-log.json                        the access-log excerpt for the exported footage

``<seq>`` is the sequence number zero-padded to 12 digits. docs/FORMAT.md writes all of this out.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from protocol.canonical import parse_canonical
from protocol.errors import EncodingError, SchemaError
from protocol.messages import ServerKey, SignedMessage
from protocol.schema import (
    Invalid,
    Message,
    check_device_id,
    check_hex32,
    check_id,
    check_range,
    check_text,
    check_time,
)

INDEX = "index.json"
INDEX_HTML = "index.html"
README = "README.txt"
SERVER_KEYS = "keys/server-keys.json"
CHECKPOINT = "log/checkpoint.note"
WITNESSES = "log/witnesses.json"
AUDIT = "case/audit.json"
ACCESS_LOG = "case/access-log.json"

#: Upper bound on the signed index (it lists every recording; a case has at most thousands).
MAX_INDEX_BYTES = 32 << 20
#: Upper bound on a proof file.
MAX_PROOF_BYTES = 64 << 10


def seq_name(seq: int) -> str:
    """A sequence number as it appears in file names."""
    return f"{seq:012d}"


def device_dir(device_id: str) -> str:
    """Folder of one device."""
    return f"devices/{device_id}"


def entry_path(device_id: str, seq: int) -> str:
    """An entry's envelope."""
    return f"devices/{device_id}/entries/{seq_name(seq)}.json"


def receipt_path(device_id: str, seq: int) -> str:
    """An entry's receipt."""
    return f"devices/{device_id}/receipts/{seq_name(seq)}.json"


def proof_path(device_id: str, seq: int) -> str:
    """An entry's inclusion proof."""
    return f"devices/{device_id}/proofs/{seq_name(seq)}.json"


def chunk_path(device_id: str, seq: int) -> str:
    """A chunk's original bytes."""
    return f"devices/{device_id}/chunks/{seq_name(seq)}.mp4"


def certificate_path(device_id: str) -> str:
    """A device's certificate."""
    return f"devices/{device_id}/certificate.json"


def rotation_path(device_id: str, n: int) -> str:
    """The n-th key rotation of a device (0-based)."""
    return f"devices/{device_id}/key-rotations/{n:04d}.json"


def recording_path(device_id: str, recording_id: str) -> str:
    """A recording's remuxed MP4."""
    return f"recordings/{device_id}-{recording_id}.mp4"


def checkpoint_path(size: int) -> str:
    """An earlier checkpoint."""
    return f"log/checkpoints/{size}.note"


def consistency_path(size: int) -> str:
    """The consistency proof from an earlier checkpoint."""
    return f"log/consistency/{size}.json"


# -- the signed index ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexRecording(Message):
    """One exported recording: which device, which sequence numbers, which chunks."""

    device_id: str
    recording_id: str
    first_seq: int
    last_seq: int
    chunk_seqs: tuple[int, ...]
    complete: bool  # the range opens with a start event and closes with a stop or interrupted event
    mp4: str | None

    def _check(self) -> None:
        check_device_id("device_id", self.device_id)
        check_id("recording_id", self.recording_id)
        check_range("first_seq", self.first_seq, 0)
        check_range("last_seq", self.last_seq, self.first_seq)
        for s in self.chunk_seqs:
            check_range("chunk_seqs[]", s, self.first_seq, self.last_seq)
        if list(self.chunk_seqs) != sorted(set(self.chunk_seqs)):
            raise Invalid("chunk_seqs must be increasing")
        check_text("mp4", self.mp4, optional=True, max_len=300)


@dataclass(frozen=True, slots=True)
class IndexDevice(Message):
    """One device: the contiguous range of its entries the package holds."""

    device_id: str
    first_seq: int
    last_seq: int
    key_rotations: int

    def _check(self) -> None:
        check_device_id("device_id", self.device_id)
        check_range("first_seq", self.first_seq, 0)
        check_range("last_seq", self.last_seq, self.first_seq)
        check_range("key_rotations", self.key_rotations, 0, 1000)


@dataclass(frozen=True, slots=True)
class IndexLink(Message):
    """A recording linked to a case step."""

    case_id: str
    step_id: str
    device_id: str
    recording_id: str

    def _check(self) -> None:
        check_id("case_id", self.case_id)
        check_id("step_id", self.step_id)
        check_device_id("device_id", self.device_id)
        check_id("recording_id", self.recording_id)


@dataclass(frozen=True, slots=True)
class IndexFile(Message):
    """A derived file (no signature of its own) pinned by the index: remuxed MP4s, reports, the HTML."""

    path: str
    sha256: str
    size: int

    def _check(self) -> None:
        check_text("path", self.path, max_len=300)
        check_hex32("sha256", self.sha256)
        check_range("size", self.size, 0)


@dataclass(frozen=True, slots=True)
class ExportIndex(SignedMessage):
    """What the package must contain, signed by the server: recordings with sequence ranges, links, files."""

    PAYLOAD_TYPE: ClassVar[str] = "custody/export-index/v1"

    v: int
    export_id: str
    created_ms: int
    origin: str
    checkpoint_size: int
    checkpoint_root: str
    access_id: int
    reason: str
    case_id: str | None
    selection: str
    devices: tuple[IndexDevice, ...]
    recordings: tuple[IndexRecording, ...]
    links: tuple[IndexLink, ...]
    files: tuple[IndexFile, ...]
    server_keys: tuple[ServerKey, ...]

    def _check(self) -> None:
        check_range("v", self.v, 1, 1)
        check_id("export_id", self.export_id)
        check_time("created_ms", self.created_ms)
        check_text("origin", self.origin, max_len=200)
        check_range("checkpoint_size", self.checkpoint_size, 1)
        check_hex32("checkpoint_root", self.checkpoint_root)
        check_range("access_id", self.access_id, 1)
        check_text("reason", self.reason, max_len=500)
        check_id("case_id", self.case_id, optional=True)
        check_text("selection", self.selection, max_len=1000)
        if not self.server_keys:
            raise Invalid("server_keys lists at least the key that signed the index")
        ids = [d.device_id for d in self.devices]
        if len(ids) != len(set(ids)):
            raise Invalid("a device is listed twice")


# -- proof files --------------------------------------------------------------------------------------


def _hashes(values: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(values, list) or len(values) > 128:
        raise SchemaError(f"{what}: proof must be a list of at most 128 hashes", code="bad_proof")
    out = []
    for v in values:
        if not isinstance(v, str):
            raise SchemaError(f"{what}: proof hash is not text", code="bad_proof")
        try:
            out.append(base64.b64decode(v, validate=True))
        except (binascii.Error, ValueError):
            raise SchemaError(f"{what}: proof hash is not base64", code="bad_proof") from None
    return tuple(out)


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise EncodingError(f"{what} is not JSON") from None
    if not isinstance(obj, dict):
        raise SchemaError(f"{what} is not a JSON object")
    return obj


def _int(obj: dict[str, Any], key: str, what: str) -> int:
    v = obj.get(key)
    if type(v) is not int or v < 0:
        raise SchemaError(f"{what}: {key} must be a non-negative integer")
    return v


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """A leaf (its exact bytes), its index, the tree size and the audit path (standard base64 hashes)."""

    index: int
    size: int
    leaf: bytes
    proof: tuple[bytes, ...]

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "inclusion proof") -> InclusionProof:
        """Parse the JSON file form ``{"index", "size", "leaf", "proof"}`` (as the log API answers it)."""
        if len(data) > MAX_PROOF_BYTES:
            raise EncodingError(f"{what} is too large")
        obj = _load(data, what)
        leaf_text = obj.get("leaf")
        if not isinstance(leaf_text, str):
            raise SchemaError(f"{what}: leaf must be base64 text")
        try:
            leaf = base64.b64decode(leaf_text, validate=True)
        except (binascii.Error, ValueError):
            raise SchemaError(f"{what}: leaf is not base64") from None
        return cls(_int(obj, "index", what), _int(obj, "size", what), leaf, _hashes(obj.get("proof"), what))

    def to_json(self) -> dict[str, Any]:
        """The JSON file form."""
        return {"index": self.index, "size": self.size, "leaf": base64.b64encode(self.leaf).decode("ascii"),
                "proof": [base64.b64encode(h).decode("ascii") for h in self.proof]}


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """A consistency proof between two tree sizes (standard base64 hashes)."""

    size1: int
    size2: int
    proof: tuple[bytes, ...]

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "consistency proof") -> ConsistencyProof:
        """Parse ``{"from", "to", "proof"}`` (as the log API answers it)."""
        if len(data) > MAX_PROOF_BYTES:
            raise EncodingError(f"{what} is too large")
        obj = _load(data, what)
        return cls(_int(obj, "from", what), _int(obj, "to", what), _hashes(obj.get("proof"), what))

    def to_json(self) -> dict[str, Any]:
        """The JSON file form."""
        return {"from": self.size1, "to": self.size2,
                "proof": [base64.b64encode(h).decode("ascii") for h in self.proof]}


def parse_server_keys(data: bytes) -> tuple[ServerKey, ...]:
    """``keys/server-keys.json``: ``{"keys": [ServerKey, ...]}``."""
    obj = parse_canonical(data, max_bytes=1 << 20)
    keys = obj.get("keys")
    if not isinstance(keys, list):
        raise SchemaError("server-keys.json has no key list")
    return tuple(ServerKey.from_dict(k) for k in keys)
