"""Offline verification of a case export package, as a numbered checklist (like sigstore's verifier).

Pure: the caller passes the package's files (:class:`PackageFiles`), the server key it trusts and
any checkpoints it obtained elsewhere; nothing here opens a file. ``custody verify`` (custody/verify.py)
is the command around it, and docs/FORMAT.md describes the same steps for anyone writing their own.

The trust chain, from what is given to what is proved:

* the server key (given) signs the index, which lists the server's key history, the recordings,
  their sequence ranges, the links and the derived files;
* the checkpoint is signed by that key under the log's name (the index's origin);
* device certificates are signed by a server key of the history; a device's later keys come from
  key rotations each signed by the key before;
* entries are signed by their device and chained (sequence and ``prev``); chunk bytes match them;
* receipts are signed by a server key and name the entry; each entry's leaf is included in the
  checkpoint's tree;
* checkpoints from elsewhere (a witness, a device) must be consistent with the package's.

Steps:
  (1) the package holds a signed index;
  (2) the index is signed by the trusted server key;
  (3) every file is accounted for and the derived files match the index;
  (4) the checkpoint is the log's, signed by the trusted key, and matches the index;
  (5) earlier and supplied checkpoints are consistent with it (no fork);
  (6) device certificates are signed by the server; key rotations chain;
  (7) every device's entries are signed, in order, complete and chained;
  (8) chunk bytes match their entries;
  (9) receipts are signed by the server and match their entries;
  (10) every entry is included in the log at the checkpoint;
  (11) every indexed recording is whole (start, chunks, stop) and its chunks are in the package;
  (12) every link names an exported recording.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from protocol.chain import entry_hash
from protocol.checkpoint import Checkpoint, NoteVerifier, SignedNote
from protocol.envelope import Envelope
from protocol.errors import CustodyError, ProofError
from protocol.keys import ED25519, VerifyKey, key_fingerprint
from protocol.leaves import EntryLeaf, parse_leaf
from protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from protocol.messages import (
    GENESIS_PREV,
    ChunkManifest,
    DeviceCertificate,
    KeyRotation,
    Receipt,
    RecordingEvent,
    ServerKey,
    parse_entry,
)
from protocol.package import (
    CHECKPOINT,
    INDEX,
    MAX_INDEX_BYTES,
    ConsistencyProof,
    ExportIndex,
    InclusionProof,
    certificate_path,
    checkpoint_path,
    chunk_path,
    consistency_path,
    entry_path,
    parse_server_keys,
    proof_path,
    receipt_path,
    rotation_path,
)

PASS, FAIL, SKIP = "pass", "FAIL", "skip"
MAX_PROBLEMS_SHOWN = 20


class PackageFiles(Protocol):
    """Read access to a package's files (a ZIP archive or a directory)."""

    def names(self) -> list[str]:
        """Every file name (``/``-separated, no directories)."""

    def read(self, name: str) -> bytes:
        """A file's bytes; KeyError when absent."""


@dataclass(slots=True)
class Step:
    """One numbered step."""

    number: int
    title: str
    status: str = PASS
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, problem: str) -> None:
        """Record a problem (the step fails)."""
        self.status = FAIL
        self.problems.append(problem)


@dataclass(slots=True)
class Report:
    """The checklist's outcome."""

    steps: list[Step]

    @property
    def ok(self) -> bool:
        """True only when every step passed (a skipped step is not a pass: it is never expected here)."""
        return all(s.status == PASS for s in self.steps)

    @property
    def first_failure(self) -> Step | None:
        """The first step that failed."""
        return next((s for s in self.steps if s.status == FAIL), None)

    def step(self, number: int) -> Step:
        """A step by number."""
        return next(s for s in self.steps if s.number == number)

    def lines(self) -> list[str]:
        """The checklist as text."""
        out = []
        for s in self.steps:
            mark = {PASS: "ok  ", FAIL: "FAIL", SKIP: "skip"}[s.status]
            out.append(f"({s.number}) {mark} {s.title}")
            out.extend(f"       {n}" for n in s.notes)
            shown = s.problems[:MAX_PROBLEMS_SHOWN]
            out.extend(f"       - {p}" for p in shown)
            if len(s.problems) > len(shown):
                out.append(f"       - ... and {len(s.problems) - len(shown)} more")
        return out


# -- the trusted key --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """The server key the verifier trusts: a public key, or only its fingerprint (the key then comes from
    the package's key history and must match it); a note verifier key also pins the log's name."""

    key: VerifyKey | None
    fingerprint: str
    origin: str | None = None

    @classmethod
    def parse(cls, text: str) -> TrustedKey:
        """A note verifier key (``name+hash+base64``), a 64-hex fingerprint, or the raw key in base64(url)."""
        t = text.strip()
        if re.fullmatch(r"[0-9a-f]{64}", t):
            return cls(None, t)
        if "+" in t and re.fullmatch(r"[^+\s]+\+[0-9a-f]{8}\+\S+", t):
            verifier = NoteVerifier.from_vkey(t)
            return cls(verifier.key, verifier.key.fingerprint, verifier.name)
        raw = t.removeprefix("ed25519:")
        try:
            data = base64.urlsafe_b64decode(raw.replace("+", "-").replace("/", "_") + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            data = b""
        if len(data) != 32:
            raise ProofError("the server key must be a note verifier key, a 64-hex fingerprint or a raw Ed25519 "
                             "key in base64", code="bad_key")
        key = VerifyKey(ED25519, data)
        return cls(key, key.fingerprint)


# -- helpers ----------------------------------------------------------------------------------------------


def _read(files: PackageFiles, name: str) -> bytes | None:
    try:
        return files.read(name)
    except KeyError:
        return None


def _err(exc: Exception) -> str:
    return exc.message if isinstance(exc, CustodyError) else str(exc)


@dataclass(slots=True)
class _DeviceKeys:
    """A device's keys by key id, from its certificate and rotations."""

    keys: dict[str, VerifyKey] = field(default_factory=dict)


def _hist_key(history: dict[str, VerifyKey], key_id: str) -> VerifyKey | None:
    return history.get(key_id)


# -- the checklist ---------------------------------------------------------------------------------------


def verify_package(files: PackageFiles, trusted: TrustedKey, *, checkpoints: Sequence[tuple[str, bytes]] = (),
                   consistency: Sequence[bytes] = (),
                   media_check: Callable[[bytes], str | None] | None = None) -> Report:
    """Run the checklist over ``files``.

    ``checkpoints`` are (label, note bytes) obtained elsewhere; ``consistency`` are consistency
    proof files for supplied checkpoints newer than the package's; ``media_check`` (if given)
    returns None when a chunk's media is sound, else why not (step 13).
    """
    titles = [
        "the package holds a signed index",
        "the index is signed by the trusted server key",
        "every file is accounted for; derived files match the index",
        "the checkpoint is this log's, signed by the trusted key, and matches the index",
        "earlier and supplied checkpoints are consistent with it (no fork)",
        "device certificates are signed by the server; key rotations chain",
        "entries are signed by their device, in order, complete and chained",
        "chunk bytes match their entries",
        "receipts are signed by the server and match their entries",
        "every entry is included in the log at the checkpoint",
        "every recording in the index is whole and in the package",
        "every link names an exported recording",
    ]
    steps = [Step(i + 1, t) for i, t in enumerate(titles)]
    if media_check is not None:
        steps.append(Step(13, "every chunk's media decodes"))
    report = Report(steps)
    s = {st.number: st for st in steps}

    def stop_after(n: int) -> Report:
        for st in steps[n:]:
            if st.status == PASS and not st.problems:
                st.status = SKIP
                st.notes.append(f"not checked: step ({n}) failed, nothing after it can be trusted")
        return report

    # (1) the index
    names = set(files.names())
    raw_index = _read(files, INDEX)
    index: ExportIndex | None = None
    envelope: Envelope | None = None
    if raw_index is None:
        s[1].fail(f"{INDEX} is missing")
        return stop_after(1)
    try:
        envelope = Envelope.from_bytes(raw_index, max_bytes=MAX_INDEX_BYTES)
        index = ExportIndex.peek(envelope)
    except CustodyError as exc:
        s[1].fail(f"{INDEX} is not a signed export index: {_err(exc)}")
        return stop_after(1)
    s[1].notes.append(f"export {index.export_id}, {len(index.recordings)} recording(s), "
                      f"{len(index.devices)} device(s)")

    # (2) the index signature, by the trusted key
    history: dict[str, VerifyKey] = {}
    for k in index.server_keys:
        history[k.key_id] = k.verify_key
    key = trusted.key
    if key is None:
        key = next((k.verify_key for k in index.server_keys if k.verify_key.fingerprint == trusted.fingerprint), None)
        if key is None:
            s[2].fail(f"no key with fingerprint {trusted.fingerprint[:16]}… in the index's key history")
            return stop_after(2)
    try:
        envelope.verify(key, payload_type=ExportIndex.PAYLOAD_TYPE)
    except CustodyError as exc:
        s[2].fail(f"the index is not signed by the trusted key {key.key_id}: {_err(exc)}")
        return stop_after(2)
    if key.key_id not in history:
        s[2].fail(f"the trusted key {key.key_id} is not in the index's key history")
    if trusted.origin is not None and trusted.origin != index.origin:
        s[2].fail(f"the index is of log {index.origin!r}; the trusted key is of log {trusted.origin!r}")
    s[2].notes.append(f"server key {key.key_id} (fingerprint {key.fingerprint[:16]}…); "
                      f"{len(history)} key(s) in the history")
    keys_file = _read(files, "keys/server-keys.json")
    try:
        if keys_file is None or parse_server_keys(keys_file) != tuple(index.server_keys):
            s[2].fail("keys/server-keys.json is missing or differs from the key history in the signed index")
    except CustodyError as exc:
        s[2].fail(f"keys/server-keys.json: {_err(exc)}")
    if s[2].status == FAIL:
        return stop_after(2)

    # (3) files: what the index accounts for
    expected = _expected_files(index, names)
    for f in index.files:
        data = _read(files, f.path)
        if data is None:
            s[3].fail(f"{f.path} is missing")
        elif len(data) != f.size or hashlib.sha256(data).hexdigest() != f.sha256:
            s[3].fail(f"{f.path} differs from the index (sha256 {hashlib.sha256(data).hexdigest()[:16]}…, "
                      f"index says {f.sha256[:16]}…)")
    for name in sorted(names - expected):
        s[3].fail(f"{name} is not accounted for by the index")

    # (4) the checkpoint
    origin = index.origin
    cp: Checkpoint | None = None
    note_bytes = _read(files, CHECKPOINT)
    if note_bytes is None:
        s[4].fail(f"{CHECKPOINT} is missing")
    else:
        try:
            note = SignedNote.parse(note_bytes)
            cp = note.checkpoint()
            if cp.origin != origin:
                s[4].fail(f"the checkpoint is of log {cp.origin!r}, the package of log {origin!r}")
            note.verify(NoteVerifier(origin, key))
            if (cp.size, cp.root.hex()) != (index.checkpoint_size, index.checkpoint_root):
                s[4].fail(f"the checkpoint (size {cp.size}) is not the one the index names "
                          f"(size {index.checkpoint_size})")
            cosigners = [sig.name for sig in note.signatures if sig.name != origin]
            s[4].notes.append(f"log {origin!r}, size {cp.size}, root {cp.root.hex()[:16]}…; "
                              f"cosigned by {', '.join(cosigners) or 'no witness yet'}")
            _check_cosignatures(files, note, s[4], "the checkpoint")
        except CustodyError as exc:
            s[4].fail(f"{CHECKPOINT}: {_err(exc)}")
    if s[4].status == FAIL:
        cp = None

    # (5) consistency: earlier checkpoints in the package, and checkpoints from elsewhere
    if cp is None:
        s[5].status = SKIP
        s[5].notes.append("not checked: no trusted checkpoint (step 4)")
    else:
        _check_consistency(files, names, cp, origin, history, checkpoints, consistency, s[5])

    # (6) certificates and key rotations
    device_keys: dict[str, _DeviceKeys] = {}
    for d in index.devices:
        dk = device_keys.setdefault(d.device_id, _DeviceKeys())
        raw = _read(files, certificate_path(d.device_id))
        if raw is None:
            s[6].fail(f"{certificate_path(d.device_id)} is missing")
            continue
        try:
            cert_env = Envelope.from_bytes(raw)
            cert = DeviceCertificate.peek(cert_env)
            signer = _hist_key(history, cert_env.key_id)
            if signer is None:
                raise ProofError(f"signed by key {cert_env.key_id}, which is not a server key", code="wrong_key")
            cert_env.verify(signer, payload_type=DeviceCertificate.PAYLOAD_TYPE)
            if cert.device_id != d.device_id:
                raise ProofError(f"the certificate is of device {cert.device_id}", code="wrong_device")
            dk.keys[cert.verify_key.key_id] = cert.verify_key
            current = cert.verify_key
            for n in range(d.key_rotations):
                rot_raw = _read(files, rotation_path(d.device_id, n))
                if rot_raw is None:
                    raise ProofError(f"key rotation {n} is missing")
                rotation = KeyRotation.open(Envelope.from_bytes(rot_raw), current)
                if rotation.device_id != d.device_id:
                    raise ProofError(f"key rotation {n} names device {rotation.device_id}")
                current = VerifyKey(rotation.alg, rotation.new_public_key)
                dk.keys[current.key_id] = current
        except CustodyError as exc:
            s[6].fail(f"device {d.device_id}: certificate: {_err(exc)}")

    # (7) entries: per device, the indexed range in full
    parsed: dict[tuple[str, int], tuple[Envelope, ChunkManifest | RecordingEvent]] = {}
    for d in index.devices:
        keys_of = device_keys.get(d.device_id, _DeviceKeys()).keys
        prev_hash: str | None = None
        for seq in range(d.first_seq, d.last_seq + 1):
            path = entry_path(d.device_id, seq)
            raw = _read(files, path)
            if raw is None:
                s[7].fail(f"device {d.device_id}: entry {seq} is missing (gap in the chain)")
                prev_hash = None
                continue
            try:
                env = Envelope.from_bytes(raw)
                entry = parse_entry(env)
            except CustodyError as exc:
                s[7].fail(f"{path}: not a signed entry: {_err(exc)}")
                prev_hash = None
                continue
            h = entry_hash(raw)
            problems = []
            signer = keys_of.get(env.key_id)
            if signer is None:
                problems.append(f"signed by key {env.key_id}, not a key of device {d.device_id}")
            else:
                try:
                    env.verify(signer)
                except CustodyError as exc:
                    problems.append(f"signature does not verify: {_err(exc)}")
            if entry.device_id != d.device_id:
                problems.append(f"names device {entry.device_id} (entry of another device)")
            if entry.seq != seq:
                problems.append(f"holds seq {entry.seq} where seq {seq} belongs (reordered or substituted)")
            expected_prev = GENESIS_PREV if seq == 0 else prev_hash
            if expected_prev is not None and entry.prev != expected_prev:
                problems.append(f"prev {entry.prev[:16]}… is not the hash of entry {seq - 1}")
            for p in problems:
                s[7].fail(f"device {d.device_id} entry {seq}: {p}")
            prev_hash = h
            if not problems:
                parsed[(d.device_id, seq)] = (env, entry)
        if d.first_seq > 0:
            s[7].notes.append(f"device {d.device_id}: entries {d.first_seq}..{d.last_seq} "
                              f"(entry {d.first_seq}'s predecessor is outside the package)")

    # (8) chunk bytes
    for r in index.recordings:
        for seq in r.chunk_seqs:
            got = parsed.get((r.device_id, seq))
            data = _read(files, chunk_path(r.device_id, seq))
            if data is None:
                s[8].fail(f"device {r.device_id} chunk {seq} is missing")
                continue
            if got is None:
                s[8].fail(f"device {r.device_id} chunk {seq}: no valid entry to check it against (step 7)")
                continue
            manifest = got[1]
            if not isinstance(manifest, ChunkManifest):
                s[8].fail(f"device {r.device_id} seq {seq} is not a chunk entry")
                continue
            actual = hashlib.sha256(data).hexdigest()
            if len(data) != manifest.size or actual != manifest.sha256:
                s[8].fail(f"device {r.device_id} chunk {seq}: bytes hash to {actual[:16]}… ({len(data)} bytes), "
                          f"the signed entry says {manifest.sha256[:16]}… ({manifest.size} bytes)")

    # (9) receipts, (10) inclusion
    receipts: dict[tuple[str, int], Receipt] = {}
    for d in index.devices:
        for seq in range(d.first_seq, d.last_seq + 1):
            raw = _read(files, receipt_path(d.device_id, seq))
            got = parsed.get((d.device_id, seq))
            if raw is None:
                s[9].fail(f"device {d.device_id} entry {seq}: receipt is missing")
                continue
            try:
                env = Envelope.from_bytes(raw)
                receipt = Receipt.peek(env)
                signer = _hist_key(history, env.key_id)
                if signer is None:
                    raise ProofError(f"signed by key {env.key_id}, which is not a server key", code="wrong_key")
                env.verify(signer, payload_type=Receipt.PAYLOAD_TYPE)
            except CustodyError as exc:
                s[9].fail(f"device {d.device_id} entry {seq}: receipt: {_err(exc)}")
                continue
            if got is not None:
                entry_env, entry = got
                want_sha = entry.sha256 if isinstance(entry, ChunkManifest) else None
                if (receipt.device_id, receipt.seq, receipt.entry_hash, receipt.stored_sha256) != (
                        d.device_id, seq, entry_hash(entry_env.raw), want_sha):
                    s[9].fail(f"device {d.device_id} entry {seq}: the receipt is for another entry or other bytes")
                    continue
            if receipt.log_index is None:
                s[9].fail(f"device {d.device_id} entry {seq}: the receipt carries no log index")
                continue
            receipts[(d.device_id, seq)] = receipt
    if cp is None:
        s[10].status = SKIP
        s[10].notes.append("not checked: no trusted checkpoint (step 4)")
    else:
        for (dev, seq), receipt in sorted(receipts.items()):
            what = f"device {dev} entry {seq}"
            raw = _read(files, proof_path(dev, seq))
            if raw is None:
                s[10].fail(f"{what}: inclusion proof is missing")
                continue
            try:
                proof = InclusionProof.from_bytes(raw)
                leaf = parse_leaf(proof.leaf)
                if not isinstance(leaf, EntryLeaf) or (leaf.device_id, leaf.seq, leaf.entry_hash, leaf.stored_sha256,
                                                       leaf.time_ms) != (
                        receipt.device_id, receipt.seq, receipt.entry_hash, receipt.stored_sha256,
                        receipt.server_time_ms):
                    raise ProofError("the proof's leaf is not this entry's receipt", code="wrong_leaf")
                if proof.index != receipt.log_index or proof.size != cp.size:
                    raise ProofError(f"the proof is for leaf {proof.index} in size {proof.size}; the receipt says "
                                     f"leaf {receipt.log_index}, the checkpoint size {cp.size}", code="wrong_leaf")
                verify_inclusion(proof.index, proof.size, leaf_hash(proof.leaf), proof.proof, cp.root)
            except CustodyError as exc:
                s[10].fail(f"{what}: {_err(exc)}")

    # (11) recordings
    for r in index.recordings:
        what = f"recording {r.recording_id} of device {r.device_id}"
        holder = next((d for d in index.devices if d.device_id == r.device_id), None)
        if holder is None or not holder.first_seq <= r.first_seq <= r.last_seq <= holder.last_seq:
            s[11].fail(f"{what}: seq {r.first_seq}..{r.last_seq} is outside the device's range in the index")
            continue
        mine = [parsed.get((r.device_id, q)) for q in range(r.first_seq, r.last_seq + 1)]
        if any(m is None for m in mine):
            missing = [r.first_seq + i for i, m in enumerate(mine) if m is None]
            s[11].fail(f"{what}: entries {_ranges(missing)} are missing or invalid")
            continue
        ents = [m[1] for m in mine if m is not None]
        others = [e.seq for e in ents if e.recording_id != r.recording_id]
        if others:
            s[11].fail(f"{what}: seq {_ranges(others)} belong to another recording")
        chunks = [e for e in ents if isinstance(e, ChunkManifest)]
        if tuple(c.seq for c in chunks) != r.chunk_seqs:
            s[11].fail(f"{what}: the chunks in its range are {_ranges([c.seq for c in chunks])}, the index says "
                       f"{_ranges(list(r.chunk_seqs))}")
        if [c.index for c in chunks] != list(range(len(chunks))):
            s[11].fail(f"{what}: chunk indexes are not 0..{len(chunks) - 1} in order")
        first, last = ents[0], ents[-1]
        is_complete = (isinstance(first, RecordingEvent) and first.event == "start"
                       and isinstance(last, RecordingEvent) and last.event in ("stop", "interrupted"))
        if r.complete and not is_complete:
            s[11].fail(f"{what}: does not run from a start event to a stop event")
        if isinstance(last, RecordingEvent) and last.event != "start" and last.chunks != len(chunks):
            s[11].fail(f"{what}: its {last.event} event counts {last.chunks} chunks, {len(chunks)} are here")
        if not r.complete:
            s[11].notes.append(f"{what}: the server marked it incomplete (no start or stop event)")

    # (12) links
    exported = {(r.device_id, r.recording_id) for r in index.recordings}
    for link in index.links:
        if (link.device_id, link.recording_id) not in exported:
            s[12].fail(f"link {link.case_id}/{link.step_id} names recording {link.recording_id}, which is not "
                       "in the package")
    s[12].notes.append(f"{len(index.links)} link(s)")

    # (13) media
    if media_check is not None:
        for r in index.recordings:
            for seq in r.chunk_seqs:
                data = _read(files, chunk_path(r.device_id, seq))
                if data is None:
                    continue  # step 8 said so
                why = media_check(data)
                if why is not None:
                    s[13].fail(f"device {r.device_id} chunk {seq}: {why}")
    return report


def _expected_files(index: ExportIndex, names: Iterable[str]) -> set[str]:
    out = {INDEX, CHECKPOINT, "keys/server-keys.json", "log/witnesses.json"}
    out |= {f.path for f in index.files}
    for d in index.devices:
        out.add(certificate_path(d.device_id))
        out |= {rotation_path(d.device_id, n) for n in range(d.key_rotations)}
        for seq in range(d.first_seq, d.last_seq + 1):
            out |= {entry_path(d.device_id, seq), receipt_path(d.device_id, seq), proof_path(d.device_id, seq)}
    for r in index.recordings:
        out |= {chunk_path(r.device_id, seq) for seq in r.chunk_seqs}
    # Earlier checkpoints come in pairs with their consistency proofs; which ones is the exporter's choice.
    for name in names:
        m = re.fullmatch(r"log/checkpoints/([1-9][0-9]{0,15})\.note", name)
        if m and consistency_path(int(m.group(1))) in names:
            out |= {name, consistency_path(int(m.group(1)))}
    return out


def _check_cosignatures(files: PackageFiles, note: SignedNote, step: Step, label: str) -> None:
    """Cosignatures by the package's listed witnesses must verify (an invalid one is a failure)."""
    raw = _read(files, "log/witnesses.json")
    if raw is None:
        return
    try:
        listed = json.loads(raw).get("witnesses", [])
        verifiers = [NoteVerifier.from_vkey(w["vkey"]) for w in listed]
    except (ValueError, KeyError, TypeError, AttributeError, CustodyError):
        step.fail("log/witnesses.json is not a list of witness verifier keys")
        return
    for v in verifiers:
        if any(sig.name == v.name for sig in note.signatures):
            try:
                timestamp = note.verify(v)
                step.notes.append(f"{label}: cosignature by {v.name} verifies (time {timestamp})")
            except CustodyError as exc:
                step.fail(f"{label}: cosignature by {v.name}: {_err(exc)}")


def _open_log_note(data: bytes, origin: str, history: dict[str, VerifyKey]) -> Checkpoint:
    """A checkpoint of log ``origin`` signed by any key of the history."""
    note = SignedNote.parse(data)
    cp = note.checkpoint()
    if cp.origin != origin:
        raise ProofError(f"checkpoint of another log ({cp.origin!r}, this package is of {origin!r})",
                         code="wrong_log")
    for k in history.values():
        try:
            note.verify(NoteVerifier(origin, k))
            return cp
        except ProofError:
            continue
    raise ProofError("not signed by any key of the server's key history", code="bad_checkpoint_signature")


def _check_consistency(files: PackageFiles, names: set[str], cp: Checkpoint, origin: str,
                       history: dict[str, VerifyKey], supplied: Sequence[tuple[str, bytes]],
                       extra_proofs: Sequence[bytes], step: Step) -> None:
    proofs: dict[tuple[int, int], ConsistencyProof] = {}
    earlier: dict[int, Checkpoint] = {}
    for name in sorted(names):
        m = re.fullmatch(r"log/consistency/([0-9]+)\.json", name)
        if not m:
            continue
        try:
            proof = ConsistencyProof.from_bytes(files.read(name), name)
            proofs[(proof.size1, proof.size2)] = proof
            note = files.read(checkpoint_path(int(m.group(1))))
            old = _open_log_note(note, origin, history)
            if old.size != proof.size1 or proof.size2 != cp.size:
                raise ProofError(f"proof is from {proof.size1} to {proof.size2}, the checkpoints are "
                                 f"{old.size} and {cp.size}")
            verify_consistency(old.size, cp.size, proof.proof, old.root, cp.root)
            earlier[old.size] = old
            _check_cosignatures(files, SignedNote.parse(note), step, f"checkpoint {old.size}")
        except (CustodyError, KeyError) as exc:
            step.fail(f"{name}: {_err(exc)}")
    for i, data in enumerate(extra_proofs):
        try:
            proof = ConsistencyProof.from_bytes(data, f"consistency proof {i + 1}")
            proofs[(proof.size1, proof.size2)] = proof
        except CustodyError as exc:
            step.fail(_err(exc))
    step.notes.append(f"{len(earlier)} earlier checkpoint(s) in the package are consistent with it")
    for label, data in supplied:
        try:
            other = _open_log_note(data, origin, history)
        except CustodyError as exc:
            step.fail(f"{label}: {_err(exc)}")
            continue
        try:
            if other.size == cp.size:
                if other.root != cp.root:
                    raise ProofError(f"FORK: {label} and the package's checkpoint both have size {cp.size} but "
                                     "different roots: the log showed two histories", code="fork")
            elif other.size < cp.size:
                known = earlier.get(other.size)
                if known is not None and known.root != other.root:
                    raise ProofError(f"FORK: {label} (size {other.size}) differs from this log's own checkpoint "
                                     "of that size", code="fork")
                found = proofs.get((other.size, cp.size))
                if found is None:
                    raise ProofError(f"{label} (size {other.size}): the package has no consistency proof from that "
                                     f"size; fetch GET /api/v1/log/proof/consistency?from={other.size}&to={cp.size} "
                                     "and pass it with --consistency", code="no_proof")
                try:
                    verify_consistency(other.size, cp.size, found.proof, other.root, cp.root)
                except ProofError as exc:
                    raise ProofError(f"FORK: {label} (size {other.size}) is not a prefix of the package's "
                                     f"checkpoint: {exc.message}", code="fork") from None
            else:
                found = proofs.get((cp.size, other.size))
                if found is None:
                    raise ProofError(f"{label} (size {other.size}) is newer than the package's checkpoint; fetch "
                                     f"GET /api/v1/log/proof/consistency?from={cp.size}&to={other.size} and pass it "
                                     "with --consistency", code="no_proof")
                try:
                    verify_consistency(cp.size, other.size, found.proof, cp.root, other.root)
                except ProofError as exc:
                    raise ProofError(f"FORK: the package's checkpoint is not a prefix of {label} (size "
                                     f"{other.size}): {exc.message}", code="fork") from None
            step.notes.append(f"{label} (size {other.size}) is consistent with the package's checkpoint")
        except ProofError as exc:
            step.fail(exc.message)


def _ranges(seqs: list[int]) -> str:
    if not seqs:
        return "none"
    runs: list[list[int]] = []
    for q in seqs:
        if runs and q == runs[-1][1] + 1:
            runs[-1][1] = q
        else:
            runs.append([q, q])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def fingerprint_of(key: ServerKey) -> str:
    """The SHA-256 fingerprint a person compares when told the server key."""
    return key_fingerprint(key.public_key)
