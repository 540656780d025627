"""Tree heads as C2SP signed-note checkpoints, and witness cosignatures (C2SP tlog-cosignature).

The one exception to canonical JSON: tree heads use the text format standard transparency-log
tools read. A checkpoint body is::

    <origin>
    <tree size, decimal>
    <root hash, standard base64>
    [extension lines]

followed by a blank line and signature lines ``— <name> <base64(key hash || signature)>``.
The log signs with Ed25519 (signature type 0x01); a witness cosigns with ``cosignature/v1``
(type 0x04), which binds a timestamp: ``key hash || uint64 seconds || signature`` over
``"cosignature/v1\\ntime <seconds>\\n" + body``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from protocol.errors import LocalProtocolError, ProofError
from protocol.keys import ED25519, SigningKey, VerifyKey

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
_DASH = "\u2014 "  # em dash and a space open every signature line
MAX_NOTE_BYTES = 64 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProofError(f"{what} is not base64", code="bad_checkpoint") from None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: which log (origin), how many leaves, and the root hash."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or self.origin != self.origin.strip():
            raise LocalProtocolError("checkpoint origin must be one non-empty line without outer spaces")
        if self.size < 0:
            raise LocalProtocolError("checkpoint size must not be negative")
        if len(self.root) != 32:
            raise LocalProtocolError("checkpoint root must be 32 bytes")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise LocalProtocolError("checkpoint extension lines must be non-empty single lines")

    def body(self) -> str:
        """The note text the log signs (ends with a newline)."""
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse_body(cls, body: str) -> Checkpoint:
        """Parse a checkpoint body; raise :class:`ProofError` when it is not one."""
        if not body.endswith("\n"):
            raise ProofError("checkpoint body must end with a newline", code="bad_checkpoint")
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise ProofError("checkpoint body has fewer than three lines", code="bad_checkpoint")
        origin, size_text, root_text, *ext = lines
        # ASCII only: isdigit() alone accepts "²" (int() then raises ValueError) and "٣" (read as 3).
        if not (size_text.isascii() and size_text.isdigit()) or (size_text != "0" and size_text.startswith("0")):
            raise ProofError(f"checkpoint size {size_text!r} is not a decimal number", code="bad_checkpoint")
        root = _unb64(root_text, "checkpoint root")
        try:
            return cls(origin, int(size_text), root, tuple(ext))
        except LocalProtocolError as exc:
            raise ProofError(f"bad checkpoint: {exc}", code="bad_checkpoint") from None


def key_hash(name: str, sig_type: int, public_key: bytes) -> bytes:
    """The 4-byte key hash that opens a signature: SHA-256(name || "\\n" || type || key)[:4]."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A named public key that can check one kind of note signature."""

    name: str
    key: VerifyKey
    sig_type: int = SIG_ED25519

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name) or "+" in self.name:
            raise LocalProtocolError("a note key name has no spaces and no '+'")
        if self.key.alg != ED25519 or self.sig_type not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise LocalProtocolError("only Ed25519 note and cosignature/v1 keys are supported")

    @property
    def key_hash(self) -> bytes:
        """This key's 4-byte hash."""
        return key_hash(self.name, self.sig_type, self.key.raw)

    def vkey(self) -> str:
        """The standard verifier-key text: ``name+hex(key hash)+base64(type || key)``."""
        return f"{self.name}+{self.key_hash.hex()}+{_b64(bytes([self.sig_type]) + self.key.raw)}"

    @classmethod
    def from_vkey(cls, text: str) -> NoteVerifier:
        """Parse a verifier-key text."""
        # Split at the first two '+' only (as Go's note.NewVerifier does): standard base64 of the
        # key may itself contain '+', the name and the hex key hash never do.
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise ProofError("verifier key must be name+hash+key", code="bad_vkey")
        name, hash_hex, key_b64 = parts
        try:
            raw = _unb64(key_b64, "verifier key")
        except ProofError as exc:  # same code as every other bad verifier key, not bad_checkpoint
            raise ProofError(str(exc), code="bad_vkey") from None
        if len(raw) != 33 or raw[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise ProofError("verifier key is not an Ed25519 or cosignature/v1 key", code="bad_vkey")
        try:
            verifier = cls(name, VerifyKey(ED25519, raw[1:]), raw[0])
        except LocalProtocolError as exc:
            raise ProofError(f"bad verifier key: {exc}", code="bad_vkey") from None
        if verifier.key_hash.hex() != hash_hex:
            raise ProofError("verifier key hash does not match its key", code="bad_vkey")
        return verifier


def cosignature_message(body: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signature covers."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode("utf-8")


def sign_line(body: str, name: str, key: SigningKey) -> str:
    """A log's Ed25519 signature line over ``body``."""
    blob = key_hash(name, SIG_ED25519, key.public.raw) + key.sign(body.encode("utf-8"))
    return f"{_DASH}{name} {_b64(blob)}\n"


def cosign_line(body: str, name: str, key: SigningKey, timestamp: int) -> str:
    """A witness's cosignature/v1 line over ``body`` at ``timestamp`` (seconds since the epoch)."""
    blob = (
        key_hash(name, SIG_COSIGNATURE_V1, key.public.raw)
        + struct.pack(">Q", timestamp)
        + key.sign(cosignature_message(body, timestamp))
    )
    return f"{_DASH}{name} {_b64(blob)}\n"


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a note."""

    name: str
    key_hash: bytes
    blob: bytes  # everything after the key hash

    def line(self) -> str:
        """The line as it appears in the note."""
        return f"{_DASH}{self.name} {_b64(self.key_hash + self.blob)}\n"


@dataclass(frozen=True, slots=True)
class SignedNote:
    """A note: body text and signature lines."""

    body: str
    signatures: tuple[NoteSignature, ...]

    def text(self) -> str:
        """The whole note."""
        return self.body + "\n" + "".join(s.line() for s in self.signatures)

    @classmethod
    def parse(cls, text: str | bytes) -> SignedNote:
        """Split a note into body and signatures; raise :class:`ProofError` when malformed."""
        if isinstance(text, bytes):
            if len(text) > MAX_NOTE_BYTES:
                raise ProofError("note too large", code="bad_checkpoint")
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise ProofError("note is not UTF-8", code="bad_checkpoint") from None
        split = text.rfind("\n\n")
        if split < 0 or not text.endswith("\n"):
            raise ProofError("note has no signature block", code="bad_checkpoint")
        body, sig_text = text[: split + 1], text[split + 2 :]
        sigs = []
        # A blank line with nothing after it is a note without signatures, not a malformed line.
        for line in sig_text[:-1].split("\n") if sig_text else []:
            if not line.startswith(_DASH):
                raise ProofError(f"malformed signature line {line[:40]!r}", code="bad_checkpoint")
            name, _, blob_text = line[len(_DASH) :].rpartition(" ")
            blob = _unb64(blob_text, "signature")
            if not name or len(blob) < 5:
                raise ProofError("malformed signature line", code="bad_checkpoint")
            sigs.append(NoteSignature(name, blob[:4], blob[4:]))
        if not sigs:
            raise ProofError("note has no signatures", code="bad_checkpoint")
        return cls(body, tuple(sigs))

    def with_line(self, line: str) -> SignedNote:
        """This note with one more signature line (e.g. a witness cosignature), deduplicated."""
        extra = SignedNote.parse(self.body + "\n" + line).signatures
        sigs = list(self.signatures)
        for s in extra:
            if s not in sigs:
                sigs.append(s)
        return SignedNote(self.body, tuple(sigs))

    def verify(self, verifier: NoteVerifier) -> int | None:
        """Check the signature by ``verifier``; return the cosignature timestamp (None for a log signature).

        Raise :class:`ProofError` when the note carries no valid signature by that key.
        """
        for sig in self.signatures:
            if sig.name != verifier.name or sig.key_hash != verifier.key_hash:
                continue
            if verifier.sig_type == SIG_ED25519:
                if len(sig.blob) == 64 and verifier.key.is_valid(sig.blob, self.body.encode("utf-8")):
                    return None
            elif len(sig.blob) == 72:
                (timestamp,) = struct.unpack(">Q", sig.blob[:8])
                if verifier.key.is_valid(sig.blob[8:], cosignature_message(self.body, timestamp)):
                    return int(timestamp)
            raise ProofError(f"signature by {verifier.name} does not verify", code="bad_checkpoint_signature")
        raise ProofError(f"note carries no signature by {verifier.name}", code="missing_checkpoint_signature")

    def checkpoint(self) -> Checkpoint:
        """The body as a checkpoint."""
        return Checkpoint.parse_body(self.body)


def sign_checkpoint(checkpoint: Checkpoint, name: str, key: SigningKey) -> SignedNote:
    """A checkpoint signed by the log."""
    body = checkpoint.body()
    return SignedNote.parse(body + "\n" + sign_line(body, name, key))


def open_checkpoint(text: str | bytes, log: NoteVerifier) -> tuple[Checkpoint, SignedNote]:
    """Parse a signed checkpoint and check the log's signature; origin must be the log key's name."""
    note = SignedNote.parse(text)
    note.verify(log)
    cp = note.checkpoint()
    if cp.origin != log.name:
        raise ProofError(f"checkpoint of log {cp.origin!r}, expected {log.name!r}", code="wrong_log")
    return cp, note
