"""The crash-safe chunk buffer: where footage lives on the device until the server has receipted it.

Layout of the buffer directory::

    000000000041.chunk   media bytes, then the signed entry envelope, then a 20-byte footer
    000000000042.event   a signed recording event (start, stop, interrupted)
    head.entry           the chain head's envelope, kept when the head's own file is freed
    index.json           the tinydb index: one record per entry not yet freed (rebuildable)
    corrupt/             files that do not match their signed entry (kept, never deleted)

**Commit** is one atomic, durable write: the media bytes are hashed, the manifest built with the
next sequence number and signed in memory, and media + envelope go into one file created
exclusively, fsynced, renamed into place, with the directory fsynced. The sequence number is
therefore allocated in the same durable write that commits the entry: after any crash, either
the whole file exists (the entry is committed, its bytes intact) or nothing does (the number was
never used). The index is updated after the commit without a sync: it is rebuilt from the
files whenever it is missing, damaged or disagrees with them.

**Freeing** a chunk (deleting its file) happens only for a chunk whose receipt verifies against a
server key. Nothing else ever deletes footage; a full disk stops new recording instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tinydb import Query, TinyDB
from tinydb.middlewares import CachingMiddleware
from tinydb.storages import Storage

from agent.errors import AgentError, BufferCorruptError, StorageFullError
from agent.fsops import TMP_SUFFIX, FileOps, is_no_space
from custody.clock import Clock
from protocol.chain import entry_hash
from protocol.envelope import Envelope
from protocol.errors import RemoteProtocolError
from protocol.keys import SigningKey, VerifyKey
from protocol.messages import GENESIS_PREV, ChunkManifest, CodecInfo, Receipt, RecordingEvent, parse_entry
from protocol.states import ChunkEvent, ChunkState, advance

log = logging.getLogger(__name__)

FOOTER = struct.Struct(">8sQI")  # magic, media length, envelope length
MAGIC = b"CUSTODY1"
HEAD_FILE = "head.entry"
INDEX_FILE = "index.json"
CORRUPT_DIR = "corrupt"
#: Space kept free for events, the index and the OS; below it no new chunk is accepted.
DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024

Entry = ChunkManifest | RecordingEvent


class ChunkMeta(Protocol):
    """What the media pipeline tells the buffer about a closed chunk (agent.media's EncodedChunk)."""

    @property
    def start_ms(self) -> int: ...

    @property
    def duration_ms(self) -> int: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def fps_num(self) -> int: ...

    @property
    def fps_den(self) -> int: ...

    @property
    def video_frames(self) -> int: ...

    @property
    def video_codec(self) -> str: ...

    @property
    def audio_codec(self) -> str | None: ...

    @property
    def audio_rate(self) -> int | None: ...

    @property
    def audio_samples(self) -> int | None: ...

    @property
    def pre_event(self) -> bool: ...


@dataclass(slots=True)
class BufferedEntry:
    """One entry the buffer holds (chunk or event), as the index records it."""

    seq: int
    kind: str  # "chunk" | "event"
    recording_id: str
    entry_hash: str
    state: ChunkState
    size: int = 0
    sha256: str | None = None
    start_ms: int = 0
    duration_ms: int = 0
    index: int | None = None
    pre_event: bool = False
    event: str | None = None
    receipt: str | None = None  # receipt envelope, as text, once one verified

    def to_record(self) -> dict[str, Any]:
        """The index record."""
        return {
            "seq": self.seq, "kind": self.kind, "recording_id": self.recording_id,
            "entry_hash": self.entry_hash, "state": self.state.value, "size": self.size,
            "sha256": self.sha256, "start_ms": self.start_ms, "duration_ms": self.duration_ms,
            "index": self.index, "pre_event": self.pre_event, "event": self.event, "receipt": self.receipt,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> BufferedEntry:
        """Back from an index record."""
        fields = dict(rec)
        fields["state"] = ChunkState(fields["state"])
        return cls(**fields)

    @classmethod
    def from_entry(cls, entry: Entry, hash_: str, state: ChunkState = ChunkState.COMMITTED) -> BufferedEntry:
        """From a parsed entry."""
        if isinstance(entry, ChunkManifest):
            return cls(
                entry.seq, "chunk", entry.recording_id, hash_, state, entry.size, entry.sha256,
                entry.start_ms, entry.duration_ms, entry.index, entry.pre_event,
            )
        return cls(entry.seq, "event", entry.recording_id, hash_, state, start_ms=entry.time_ms, event=entry.event)


@dataclass(slots=True)
class RecoveryReport:
    """What the start-up scan found and did; every action is also logged."""

    committed: int = 0
    recovered_into_index: int = 0
    dropped_from_index: int = 0
    temp_files_removed: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    interrupted_recording: str | None = None
    index_rebuilt: bool = False

    def lines(self) -> list[str]:
        """Human-readable summary."""
        out = [f"{self.committed} committed entries on disk"]
        if self.index_rebuilt:
            out.append("index was missing or damaged: rebuilt from the files")
        if self.recovered_into_index:
            out.append(f"{self.recovered_into_index} committed entries were missing from the index: recovered")
        if self.dropped_from_index:
            out.append(f"{self.dropped_from_index} index records had no file (already freed): dropped")
        if self.temp_files_removed:
            out.append(f"{len(self.temp_files_removed)} half-written files (never committed) removed")
        if self.corrupt:
            out.append(f"{len(self.corrupt)} files do not match their signed entry: moved to corrupt/")
        if self.interrupted_recording:
            out.append(f"recording {self.interrupted_recording} was cut by a crash: 'interrupted' event written")
        return out


class AtomicJSONStorage(Storage):
    """tinydb storage that replaces the file atomically, so the index is never left half-written.

    No fsync: the index is rebuilt from the buffer files after a power cut, so durability here
    would only add a sync to every commit.
    """

    def __init__(self, path: str, ops: FileOps | None = None) -> None:
        self.path = Path(path)
        self.ops = ops or FileOps()

    def read(self) -> dict[str, dict[str, Any]] | None:
        """The whole index, or None when absent."""
        try:
            data = self.ops.read(self.path)
        except FileNotFoundError:
            return None
        if not data:
            return None
        result: dict[str, dict[str, Any]] = json.loads(data)
        return result

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        """Replace the whole index."""
        self.ops.write_atomic(self.path, json.dumps(data, separators=(",", ":")).encode(), durable=False)

    def close(self) -> None:
        """Nothing held open."""


#: Shared by every buffer in the process (a simulated fleet runs hundreds): no thread per device.
_HASHER = ThreadPoolExecutor(2, thread_name_prefix="chunk-hash")


class IndexCache(CachingMiddleware):
    """Writes the index every few changes instead of at every commit.

    The index is rebuilt from the files after any crash, so what a crash loses here costs only a
    re-announcement (idempotent on the server); keeping the write off the commit path keeps a
    chunk's commit close to the cost of its one durable write.
    """

    WRITE_CACHE_SIZE = 16


def _name(seq: int, kind: str) -> str:
    return f"{seq:012d}.{kind}"


def chunk_parts(media: bytes, envelope: bytes) -> tuple[bytes, bytes, bytes]:
    """The on-disk form of a committed chunk as parts written in order: media, envelope, footer."""
    return media, envelope, FOOTER.pack(MAGIC, len(media), len(envelope))


def pack_chunk(media: bytes, envelope: bytes) -> bytes:
    """The on-disk form of a committed chunk, joined."""
    return b"".join(chunk_parts(media, envelope))


def unpack_chunk(data: bytes) -> tuple[bytes, bytes]:
    """Split a chunk file into media and envelope; :class:`BufferCorruptError` if malformed."""
    if len(data) < FOOTER.size:
        raise BufferCorruptError("chunk file shorter than its footer")
    magic, media_len, env_len = FOOTER.unpack_from(data, len(data) - FOOTER.size)
    if magic != MAGIC or media_len + env_len + FOOTER.size != len(data):
        raise BufferCorruptError("chunk file footer is damaged")
    return data[:media_len], data[media_len : media_len + env_len]


class ChunkBuffer:
    """The device's buffer of signed entries and their footage. One instance per buffer directory."""

    def __init__(
        self,
        root: Path,
        key: SigningKey,
        clock: Clock,
        *,
        ops: FileOps | None = None,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
    ) -> None:
        self.root = root
        self.key = key
        self.device_id = key.public.device_id
        self.clock = clock
        self.ops = ops or FileOps()
        self.reserve_bytes = reserve_bytes
        self._lock = threading.RLock()
        self._head_seq: int | None = None
        self._head_hash: str = GENESIS_PREV
        self._head_entry: Entry | None = None
        self._db: TinyDB | None = None
        self._abandoned = False
        self.alarms: set[str] = set()

    # -- opening and recovery ------------------------------------------------------------------

    def open(self, *, close_open_recording: bool = True) -> RecoveryReport:
        """Scan the directory, reconcile the index with the files, and find the chain head.

        A recording that the head shows was still open was cut by a crash: with
        ``close_open_recording`` its ``interrupted`` event is committed now.
        """
        with self._lock:
            self.ops.makedirs(self.root)
            report = RecoveryReport()
            on_disk = self._scan(report)
            self._reconcile_index(on_disk, report)
            if close_open_recording:
                self._close_interrupted(report)
            for line in report.lines():
                log.info("buffer recovery: %s", line)
            return report

    def _scan(self, report: RecoveryReport) -> dict[int, BufferedEntry]:
        found: dict[int, BufferedEntry] = {}
        head: tuple[int, str, Entry] | None = None
        for name in self.ops.listdir(self.root):
            path = self.root / name
            if name.endswith(TMP_SUFFIX):
                # Never renamed into place: never committed, so never announced. Say so and remove it.
                log.warning("buffer recovery: removing half-written file %s (never committed)", name)
                self.ops.unlink(path)
                report.temp_files_removed.append(name)
                continue
            if name in (INDEX_FILE, CORRUPT_DIR):
                continue
            if name == HEAD_FILE:
                try:
                    env = Envelope.from_bytes(self.ops.read(path))
                    entry = parse_entry(env)
                    env.verify(self.key.public)
                except (RemoteProtocolError, OSError) as exc:
                    raise BufferCorruptError(f"{path} is damaged: {exc}") from None
                if head is None or entry.seq > head[0]:
                    head = (entry.seq, entry_hash(env.raw), entry)
                continue
            if not (name.endswith(".chunk") or name.endswith(".event")):
                log.warning("buffer recovery: ignoring unexpected file %s", name)
                continue
            try:
                entry, hash_, media_ok = self._check_file(path)
            except BufferCorruptError as exc:
                self._quarantine(path, str(exc), report)
                continue
            if not media_ok:
                self._quarantine(path, "media bytes do not match the signed sha256", report)
                continue
            found[entry.seq] = BufferedEntry.from_entry(entry, hash_)
            report.committed += 1
            if head is None or entry.seq > head[0]:
                head = (entry.seq, hash_, entry)
        if head is not None:
            self._head_seq, self._head_hash, self._head_entry = head
        return found

    def _check_file(self, path: Path) -> tuple[Entry, str, bool]:
        data = self.ops.read(path)
        if path.name.endswith(".chunk"):
            media, env_bytes = unpack_chunk(data)
        else:
            media, env_bytes = b"", data
        try:
            env = Envelope.from_bytes(env_bytes)
            entry = parse_entry(env)
            env.verify(self.key.public)
        except RemoteProtocolError as exc:
            raise BufferCorruptError(f"signed entry is not valid: {exc}") from None
        expected = f"{entry.seq:012d}.{'chunk' if isinstance(entry, ChunkManifest) else 'event'}"
        if path.name != expected:
            raise BufferCorruptError(f"file name does not match its entry (seq {entry.seq})")
        media_ok = not isinstance(entry, ChunkManifest) or (
            len(media) == entry.size and hashlib.sha256(media).hexdigest() == entry.sha256
        )
        return entry, entry_hash(env.raw), media_ok

    def _quarantine(self, path: Path, reason: str, report: RecoveryReport) -> None:
        # Never deleted: a damaged file is evidence of what happened to the device.
        log.error("buffer: %s: %s; moved to %s/", path.name, reason, CORRUPT_DIR)
        self.ops.makedirs(self.root / CORRUPT_DIR)
        self.ops.rename(path, self.root / CORRUPT_DIR / path.name)
        self.ops.fsync_dir(self.root)
        report.corrupt.append(path.name)
        self.alarms.add("buffer_corrupt")

    def _reconcile_index(self, on_disk: dict[int, BufferedEntry], report: RecoveryReport) -> None:
        storage_path = self.root / INDEX_FILE
        try:
            db = TinyDB(str(storage_path), storage=IndexCache(AtomicJSONStorage), ops=self.ops)  # type: ignore[no-untyped-call]
            records = {int(r["seq"]): BufferedEntry.from_record(dict(r)) for r in db.all()}
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("buffer recovery: index unreadable (%s); rebuilding it from the files", exc)
            self.ops.unlink(storage_path)
            db = TinyDB(str(storage_path), storage=IndexCache(AtomicJSONStorage), ops=self.ops)  # type: ignore[no-untyped-call]
            records = {}
            report.index_rebuilt = True
        merged: dict[int, BufferedEntry] = {}
        for seq, entry in on_disk.items():
            rec = records.get(seq)
            if rec is not None and rec.entry_hash == entry.entry_hash:
                merged[seq] = rec
            else:
                merged[seq] = entry
                report.recovered_into_index += 1
                log.info("buffer recovery: seq %d is on disk but not in the index: recovered", seq)
        report.dropped_from_index = len(set(records) - set(on_disk))
        db.truncate()
        if merged:
            db.insert_multiple(e.to_record() for e in sorted(merged.values(), key=lambda e: e.seq))
        self._db = db

    def _close_interrupted(self, report: RecoveryReport) -> None:
        head = self._head_entry
        if head is None:
            return
        if isinstance(head, RecordingEvent) and head.event in ("stop", "interrupted"):
            return
        chunks = head.index + 1 if isinstance(head, ChunkManifest) else 0
        self.commit_event(
            head.recording_id, "interrupted", head.officer_id, head.case_step,
            chunks=chunks, reason="crash-recovery: recording was open when the agent stopped",
        )
        report.interrupted_recording = head.recording_id

    # -- the head ------------------------------------------------------------------------------

    @property
    def head_seq(self) -> int | None:
        """Sequence number of the last committed entry (None before the first)."""
        return self._head_seq

    @property
    def head_hash(self) -> str:
        """Hash of the last committed entry's envelope (genesis value before the first)."""
        return self._head_hash

    @property
    def head_entry(self) -> Entry | None:
        """The last committed entry."""
        return self._head_entry

    def _next_seq(self) -> int:
        if self._abandoned:
            raise AgentError("this buffer was abandoned (simulated power cut): nothing more is written")
        return 0 if self._head_seq is None else self._head_seq + 1

    # -- committing ----------------------------------------------------------------------------

    def commit_chunk(
        self,
        media: bytes,
        meta: ChunkMeta,
        *,
        recording_id: str,
        index: int,
        officer_id: str | None,
        case_step: str | None,
    ) -> tuple[BufferedEntry, bytes]:
        """Sign and durably commit one chunk; return its index record and signed envelope bytes."""
        with self._lock:
            self._check_space(len(media))
            seq = self._next_seq()
            codec = CodecInfo(
                "mp4", meta.video_codec, meta.width, meta.height, meta.fps_num, meta.fps_den, meta.video_frames,
                meta.audio_codec, meta.audio_rate, meta.audio_samples,
            )
            path = self.root / _name(seq, "chunk")
            tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
            try:
                fd = self.ops.open_exclusive(tmp, 0o644)
                try:
                    # Hash on a second core while the bytes go to the page cache: both release the GIL,
                    # and the hash is most of what a commit costs beyond the durable write itself.
                    digest = _HASHER.submit(lambda: hashlib.sha256(media).hexdigest())
                    self.ops.write_all(fd, media)
                    manifest = ChunkManifest(
                        1, self.device_id, seq, self._head_hash, recording_id, index, meta.start_ms,
                        meta.duration_ms, digest.result(), len(media), officer_id, case_step, meta.pre_event, codec,
                    )
                    env = manifest.sign(self.key)
                    self.ops.write_all(fd, chunk_parts(media, env.raw)[1:])
                    self.ops.fsync(fd)
                finally:
                    os.close(fd)
                # The rename is the commit point: before it the file does not exist under its name.
                self.ops.rename(tmp, path)
                self.ops.fsync_dir(self.root)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    self.ops.unlink(tmp)
                if is_no_space(exc):
                    self._raise_full(len(media))
                raise
            return self._committed(manifest, env), env.raw

    def commit_event(
        self,
        recording_id: str,
        event: str,
        officer_id: str | None,
        case_step: str | None,
        *,
        chunks: int | None = None,
        reason: str | None = None,
    ) -> tuple[BufferedEntry, bytes]:
        """Sign and durably commit a recording event (start, stop, interrupted)."""
        with self._lock:
            seq = self._next_seq()
            rec_event = RecordingEvent(
                1, self.device_id, seq, self._head_hash, recording_id, event, self.clock.now_ms(),
                officer_id, case_step, chunks, reason,
            )
            env = rec_event.sign(self.key)
            self.ops.write_atomic(self.root / _name(seq, "event"), env.raw)
            return self._committed(rec_event, env), env.raw

    def _committed(self, entry: Entry, env: Envelope) -> BufferedEntry:
        h = entry_hash(env.raw)
        self._head_seq, self._head_hash, self._head_entry = entry.seq, h, entry
        record = BufferedEntry.from_entry(entry, h)
        self._index.insert(record.to_record())
        return record

    def _check_space(self, incoming: int) -> None:
        free = self.ops.free_bytes(self.root)
        if free - incoming < self.reserve_bytes:
            self._raise_full(incoming, free)
        self.alarms.discard("storage_full")

    def _raise_full(self, incoming: int, free: int | None = None) -> None:
        self.alarms.add("storage_full")
        msg = (
            f"storage full: {free if free is not None else 'no'} bytes free, a chunk needs {incoming} plus a "
            f"reserve of {self.reserve_bytes}; recording stopped, nothing recorded was deleted"
        )
        log.error("ALARM %s", msg)
        raise StorageFullError(msg)

    # -- reading -------------------------------------------------------------------------------

    @property
    def _index(self) -> TinyDB:
        if self._db is None:
            raise AgentError("buffer is not open")
        return self._db

    def entries(self, states: Sequence[ChunkState] | None = None) -> list[BufferedEntry]:
        """Entries held (not yet freed), by sequence."""
        with self._lock:
            out = [BufferedEntry.from_record(dict(r)) for r in self._index.all()]
        if states is not None:
            out = [e for e in out if e.state in states]
        return sorted(out, key=lambda e: e.seq)

    def get(self, seq: int) -> BufferedEntry | None:
        """The index record of ``seq``, if held."""
        with self._lock:
            rec = self._index.get(Query().seq == seq)
        return BufferedEntry.from_record(dict(rec)) if isinstance(rec, dict) else None

    def read(self, seq: int) -> tuple[bytes, bytes]:
        """Media bytes (empty for events) and envelope bytes of a held entry."""
        for kind in ("chunk", "event"):
            path = self.root / _name(seq, kind)
            if path.exists():
                data = self.ops.read(path)
                return unpack_chunk(data) if kind == "chunk" else (b"", data)
        raise AgentError(f"seq {seq} is not in the buffer (freed after its receipt, or never recorded)")

    def iter_recording(self, recording_id: str) -> Iterator[tuple[BufferedEntry, bytes]]:
        """The held chunks of a recording, in order, with their media bytes."""
        for e in self.entries():
            if e.recording_id == recording_id and e.kind == "chunk":
                yield e, self.read(e.seq)[0]

    def stats(self) -> dict[str, int]:
        """Buffered chunk count and bytes, and free space."""
        held = [e for e in self.entries() if e.kind == "chunk"]
        return {
            "buffered_chunks": len(held),
            "buffered_bytes": sum(e.size for e in held),
            "storage_free": self.ops.free_bytes(self.root),
        }

    # -- state changes and receipts ------------------------------------------------------------

    def mark(self, seq: int, event: ChunkEvent) -> ChunkState:
        """Move ``seq`` through the chunk state table (announced, uploaded...)."""
        with self._lock:
            rec = self.get(seq)
            if rec is None:
                raise AgentError(f"seq {seq} is not in the buffer")
            new = advance(rec.state, event)
            if new != rec.state:
                self._index.update({"state": new.value}, Query().seq == seq)
            return new

    def accept_receipt(self, receipt_bytes: bytes, server_keys: Sequence[VerifyKey]) -> BufferedEntry:
        """Check a receipt and, when it verifies, free the entry's local copy.

        (1) signed by one of the server keys the device knows; (2) for this device;
        (3) for the entry held at that sequence (same entry hash); (4) for chunks, the stored
        sha256 is the one signed. Anything else raises and frees nothing.
        """
        env = Envelope.from_bytes(receipt_bytes)
        keys = {k.key_id: k for k in server_keys}
        key = keys.get(env.key_id)
        if key is None:
            raise RemoteProtocolError(f"receipt signed by unknown server key {env.key_id}", code="unknown_server_key")
        receipt = Receipt.open(env, key)  # (1)
        if receipt.device_id != self.device_id:  # (2)
            raise RemoteProtocolError(f"receipt is for device {receipt.device_id}", code="wrong_device")
        with self._lock:
            rec = self.get(receipt.seq)
            if rec is None:
                raise AgentError(f"receipt for seq {receipt.seq}, which the buffer does not hold")
            if rec.entry_hash != receipt.entry_hash:  # (3)
                raise RemoteProtocolError(f"receipt for seq {receipt.seq} names another entry", code="wrong_entry")
            if rec.kind == "chunk" and receipt.stored_sha256 != rec.sha256:  # (4)
                raise RemoteProtocolError(
                    f"receipt for seq {receipt.seq} says the server stored other bytes", code="wrong_bytes"
                )
            # The receipt proves the server holds and verified the bytes, whatever this device
            # last heard: walk the table to verified, then free.
            state = rec.state
            if state != ChunkState.VERIFIED:
                if state != ChunkState.UPLOADED:
                    state = advance(state, ChunkEvent.UPLOAD)
                state = advance(state, ChunkEvent.VERIFY)
            advance(state, ChunkEvent.FREE)
            self._free(rec)
            rec.state = ChunkState.FREED
            return rec

    def _free(self, rec: BufferedEntry) -> None:
        path = self.root / _name(rec.seq, rec.kind)
        if rec.seq == self._head_seq:
            # The next entry's prev needs the head's hash across restarts: keep its envelope.
            _, env = self.read(rec.seq)
            self.ops.write_atomic(self.root / HEAD_FILE, env)
        self.ops.unlink(path)
        self._index.remove(Query().seq == rec.seq)
        log.debug("freed seq %d after its receipt", rec.seq)

    def abandon(self) -> None:
        """Wait for a commit in progress, then refuse all further writes (a simulated power cut).

        The next process to open the directory must not race a write this one still has in flight.
        """
        with self._lock:
            self._abandoned = True

    @property
    def abandoned(self) -> bool:
        """Whether :meth:`abandon` cut this buffer off (nothing more is written to it)."""
        return self._abandoned

    def close(self) -> None:
        """Release the index."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
