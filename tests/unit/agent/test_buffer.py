"""The crash-safe buffer: commits, the chain across restarts, recovery, receipts, storage full."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.buffer import HEAD_FILE, ChunkBuffer, pack_chunk, unpack_chunk
from agent.errors import AgentError, BufferCorruptError, StorageFullError
from agent.fsops import FileOps
from agent.identity import load_or_create_key
from custody.clock import FakeClock
from protocol.chain import verify_chain
from protocol.envelope import Envelope
from protocol.errors import RemoteProtocolError
from protocol.keys import SigningKey
from protocol.messages import Receipt, RecordingEvent
from protocol.states import ChunkEvent, ChunkState
from tests.unit.agent.buffer_helpers import FakeMeta, media


def make(tmp_path: Path, key: SigningKey | None = None, **kw: object) -> ChunkBuffer:
    buf = ChunkBuffer(tmp_path / "buffer", key or SigningKey.generate(), FakeClock(), **kw)  # type: ignore[arg-type]
    buf.open()
    return buf


def record(buf: ChunkBuffer, rec: str, n: int) -> None:
    buf.commit_event(rec, "start", "officer-1", None)
    for i in range(n):
        buf.commit_chunk(media(), FakeMeta(start_ms=buf.clock.now_ms() + i * 5000), recording_id=rec, index=i,
                         officer_id="officer-1", case_step=None)
    buf.commit_event(rec, "stop", "officer-1", None, chunks=n)


def chain_bytes(buf: ChunkBuffer) -> list[bytes]:
    return [buf.read(e.seq)[1] for e in buf.entries()]


def test_chain_verifies_across_recordings_and_restarts(tmp_path: Path) -> None:
    key = SigningKey.generate()
    buf = make(tmp_path, key)
    record(buf, "rec-a", 3)
    buf.close()
    buf = make(tmp_path, key)  # restart
    record(buf, "rec-b", 2)
    report = verify_chain(chain_bytes(buf), key.public)
    assert report.ok, report.lines()
    assert [e.seq for e in buf.entries()] == list(range(9))


def test_media_and_envelope_round_trip(tmp_path: Path) -> None:
    buf = make(tmp_path)
    body = media(10_000)
    rec, env = buf.commit_chunk(body, FakeMeta(start_ms=buf.clock.now_ms()), recording_id="r", index=0,
                                officer_id=None, case_step="case-1:step-2")
    assert buf.read(rec.seq) == (body, env)
    assert unpack_chunk(pack_chunk(body, env)) == (body, env)


def test_crash_mid_recording_gets_interrupted_event(tmp_path: Path) -> None:
    key = SigningKey.generate()
    buf = make(tmp_path, key)
    buf.commit_event("rec-x", "start", "officer-1", "step-9")
    for i in range(2):
        buf.commit_chunk(media(), FakeMeta(start_ms=buf.clock.now_ms()), recording_id="rec-x", index=i,
                         officer_id="officer-1", case_step="step-9")
    buf.close()  # no stop: as if the power went
    buf2 = ChunkBuffer(tmp_path / "buffer", key, FakeClock())
    report = buf2.open()
    assert report.interrupted_recording == "rec-x"
    last = buf2.entries()[-1]
    event = RecordingEvent.from_bytes(Envelope.from_bytes(buf2.read(last.seq)[1]).payload)
    assert (event.event, event.chunks, event.case_step) == ("interrupted", 2, "step-9")
    assert verify_chain(chain_bytes(buf2), key.public).ok


def test_index_lost_is_rebuilt_from_files(tmp_path: Path) -> None:
    key = SigningKey.generate()
    buf = make(tmp_path, key)
    record(buf, "r", 2)
    buf.close()
    (tmp_path / "buffer" / "index.json").write_text("{half written")
    buf2 = ChunkBuffer(tmp_path / "buffer", key, FakeClock())
    report = buf2.open()
    assert report.index_rebuilt and report.recovered_into_index == 4
    assert [e.seq for e in buf2.entries()] == [0, 1, 2, 3]


def test_half_written_file_is_removed_never_signed(tmp_path: Path) -> None:
    key = SigningKey.generate()
    buf = make(tmp_path, key)
    record(buf, "r", 1)
    buf.close()
    (tmp_path / "buffer" / ".000000000003.chunk.tmp").write_bytes(b"partial")
    buf2 = ChunkBuffer(tmp_path / "buffer", key, FakeClock())
    report = buf2.open()
    assert report.temp_files_removed == [".000000000003.chunk.tmp"]
    assert buf2.head_seq == 2  # the number was never used; the next commit takes 3


def test_altered_chunk_is_quarantined_not_deleted(tmp_path: Path) -> None:
    key = SigningKey.generate()
    buf = make(tmp_path, key)
    record(buf, "r", 2)
    buf.close()
    path = tmp_path / "buffer" / "000000000001.chunk"
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))
    buf2 = ChunkBuffer(tmp_path / "buffer", key, FakeClock())
    report = buf2.open()
    assert report.corrupt == ["000000000001.chunk"]
    assert (tmp_path / "buffer" / "corrupt" / "000000000001.chunk").exists()
    assert "buffer_corrupt" in buf2.alarms


def test_receipt_frees_only_after_it_verifies(tmp_path: Path) -> None:
    key, server = SigningKey.generate(), SigningKey.generate()
    buf = make(tmp_path, key)
    rec, _env = buf.commit_chunk(media(), FakeMeta(start_ms=buf.clock.now_ms()), recording_id="r", index=0,
                                officer_id=None, case_step=None)

    def receipt(signer: SigningKey, **over: object) -> bytes:
        fields = dict(v=1, device_id=key.public.device_id, seq=rec.seq, entry_hash=rec.entry_hash,
                      object_key="k", stored_sha256=rec.sha256, server_time_ms=buf.clock.now_ms(),
                      log_index=None, tree_size=None, server_key_id=signer.key_id)
        fields.update(over)
        return Receipt(**fields).sign(signer).raw  # type: ignore[arg-type]

    with pytest.raises(RemoteProtocolError, match="unknown server key"):
        buf.accept_receipt(receipt(SigningKey.generate()), [server.public])
    with pytest.raises(RemoteProtocolError, match="names another entry"):
        buf.accept_receipt(receipt(server, entry_hash="ab" * 32), [server.public])
    with pytest.raises(RemoteProtocolError, match="stored other bytes"):
        buf.accept_receipt(receipt(server, stored_sha256="cd" * 32), [server.public])
    assert buf.get(rec.seq) is not None
    freed = buf.accept_receipt(receipt(server), [server.public])
    assert freed.state == ChunkState.FREED and buf.get(rec.seq) is None
    # The head was freed: its envelope is kept so the chain continues after a restart.
    assert (tmp_path / "buffer" / HEAD_FILE).exists()
    buf.close()
    buf2 = ChunkBuffer(tmp_path / "buffer", key, FakeClock())
    report = buf2.open()
    # Recording r had no stop, so restart closes it; the interrupted event links to the freed head.
    assert report.interrupted_recording == "r" and buf2.head_seq == 1
    interrupted = buf2.entries()[-1]
    envelope = Envelope.from_bytes(buf2.read(1)[1])
    assert RecordingEvent.from_bytes(envelope.payload).prev == rec.entry_hash
    assert interrupted.seq == 1


def test_state_table_drives_marks(tmp_path: Path) -> None:
    buf = make(tmp_path)
    rec, _ = buf.commit_event("r", "start", None, None)
    assert buf.mark(rec.seq, ChunkEvent.ANNOUNCE) == ChunkState.ANNOUNCED
    assert buf.mark(rec.seq, ChunkEvent.UPLOAD) == ChunkState.UPLOADED
    with pytest.raises(Exception, match="cannot free"):
        buf.mark(rec.seq, ChunkEvent.FREE)


class TinyDisk(FileOps):
    """A file system that reports little free space (the tmpfs test does it for real)."""

    free = 10_000

    def free_bytes(self, path: Path) -> int:
        return self.free


def test_storage_full_refuses_new_chunks_keeps_old(tmp_path: Path) -> None:
    buf = make(tmp_path, ops=TinyDisk(), reserve_bytes=1000)
    rec, _ = buf.commit_chunk(media(100), FakeMeta(start_ms=buf.clock.now_ms()), recording_id="r", index=0,
                              officer_id=None, case_step=None)
    with pytest.raises(StorageFullError, match="nothing recorded was deleted"):
        buf.commit_chunk(media(9500), FakeMeta(start_ms=buf.clock.now_ms()), recording_id="r", index=1,
                         officer_id=None, case_step=None)
    assert "storage_full" in buf.alarms
    assert [e.seq for e in buf.entries()] == [rec.seq]
    # Events still commit: the recording can be closed properly.
    buf.commit_event("r", "stop", None, None, chunks=1)


def test_device_key_mode_and_refusal_when_readable(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "keys")
    path = tmp_path / "keys" / "device.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(tmp_path / "keys").key_id == key.key_id
    os.chmod(path, 0o644)
    with pytest.raises(AgentError, match="readable by others"):
        load_or_create_key(tmp_path / "keys")


def test_unpack_refuses_damaged_footer() -> None:
    with pytest.raises(BufferCorruptError, match="footer"):
        unpack_chunk(b"x" * 40)
