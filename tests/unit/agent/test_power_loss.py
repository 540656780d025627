"""Power loss at every crash point of the buffer's commit and free paths.

SIGKILL keeps the page cache, so it is gentler than a power cut. Here a journaling FileOps
records every operation the buffer performs. For each prefix of a commit's operations (each
crash point), the directory is rebuilt as a power cut could leave it: only what was fsynced is
certain; directory changes after the last directory fsync may or may not have happened (any
prefix of them), and file data after the last fsync may be missing, partial or whole. Recovery
then runs on each rebuilt directory and the buffer's promises are checked:

- the index agrees with the files;
- every committed entry has its intact chunk (nothing corrupt is ever signed);
- every entry committed before the crash is still there, and sequence numbers continue
  without reuse;
- no half-written file survives recovery.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.buffer import ChunkBuffer
from agent.fsops import FileOps
from custody.clock import FakeClock
from protocol.chain import verify_chain
from protocol.keys import SigningKey
from protocol.messages import Receipt
from tests.unit.agent.buffer_helpers import FakeMeta, media


@dataclass
class Op:
    kind: str  # create | write | fsync | rename | fsync_dir | unlink
    path: str
    dst: str = ""
    data: bytes = b""


@dataclass
class JournalingOps(FileOps):
    """Performs operations for real and journals them with paths relative to ``root``."""

    root: Path
    journal: list[Op] = field(default_factory=list)
    fds: dict[int, str] = field(default_factory=dict)

    def rel(self, p: Path) -> str:
        return str(Path(p).relative_to(self.root))

    def open_exclusive(self, path: Path, mode: int) -> int:
        fd = super().open_exclusive(path, mode)
        self.fds[fd] = self.rel(path)
        self.journal.append(Op("create", self.rel(path)))
        return fd

    def write_all(self, fd: int, data: bytes | Sequence[bytes]) -> None:
        super().write_all(fd, data)
        joined = bytes(data) if isinstance(data, bytes) else b"".join(data)
        self.journal.append(Op("write", self.fds[fd], data=joined))

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        self.journal.append(Op("fsync", self.fds[fd]))

    def rename(self, src: Path, dst: Path) -> None:
        super().rename(src, dst)
        self.journal.append(Op("rename", self.rel(src), dst=self.rel(dst)))

    def fsync_dir(self, path: Path) -> None:
        super().fsync_dir(path)
        self.journal.append(Op("fsync_dir", self.rel(path)))

    def unlink(self, path: Path, *, durable: bool = False) -> None:
        existed = Path(path).exists()
        super().unlink(path, durable=False)
        if existed:
            self.journal.append(Op("unlink", self.rel(path)))
        if durable:
            self.fsync_dir(Path(path).parent)


def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def power_cut_states(base: dict[str, bytes], ops: list[Op]) -> list[dict[str, bytes]]:
    """Every directory state a power cut after ``ops`` can leave (within this model)."""
    inode_of: dict[str, int] = {}
    content: dict[int, bytes] = {}
    durable: dict[int, bytes] = {}
    counter = itertools.count()
    for path, data in base.items():
        i = next(counter)
        inode_of[path] = i
        content[i] = durable[i] = data
    durable_ns = dict(inode_of)
    pending: list[tuple[Op, int]] = []  # directory operations since the last directory fsync, with inode
    for op in ops:
        if op.kind == "create":
            i = next(counter)
            inode_of[op.path] = i
            content[i] = b""
            durable[i] = b""
            pending.append((op, i))
        elif op.kind == "write":
            content[inode_of[op.path]] += op.data
        elif op.kind == "fsync":
            durable[inode_of[op.path]] = content[inode_of[op.path]]
        elif op.kind == "rename":
            inode_of[op.dst] = inode_of.pop(op.path)
            pending.append((op, inode_of[op.dst]))
        elif op.kind == "unlink":
            pending.append((op, inode_of.pop(op.path)))
        elif op.kind == "fsync_dir":
            durable_ns = dict(inode_of)
            pending = []
    # Namespace variants: any prefix of the un-synced directory operations persisted.
    namespaces = []
    for k in range(len(pending) + 1):
        ns = dict(durable_ns)
        for op, inode in pending[:k]:
            if op.kind == "create":
                ns[op.path] = inode
            elif op.kind == "rename":
                ns.pop(op.path, None)
                ns[op.dst] = inode
            elif op.kind == "unlink":
                ns.pop(op.path, None)
        namespaces.append(ns)
    states = []
    for ns in namespaces:
        # Data variants for un-synced content: missing (durable part only), half, whole.
        for variant in ("durable", "half", "whole"):
            state = {}
            for path, i in ns.items():
                whole, sure = content.get(i, b""), durable.get(i, b"")
                if variant == "durable":
                    state[path] = sure
                elif variant == "half":
                    state[path] = whole[: max(len(sure), len(whole) // 2)]
                else:
                    state[path] = whole
            if state not in states:
                states.append(state)
    return states


def materialize(state: dict[str, bytes], root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for rel, data in state.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def check_recovered(root: Path, key: SigningKey, before: list[int], crashed_seq: int) -> None:
    buf = ChunkBuffer(root, key, FakeClock())
    report = buf.open(close_open_recording=False)
    assert not report.corrupt, "a power cut must never leave a committed entry with damaged bytes"
    held = [e.seq for e in buf.entries()]
    # Index agrees with files.
    on_disk = sorted(int(n.split(".")[0]) for n in os.listdir(root) if n.endswith((".chunk", ".event")))
    assert held == on_disk
    assert not [n for n in os.listdir(root) if n.endswith(".tmp")]
    # Nothing committed earlier is lost; the crashed commit either fully happened or not at all.
    assert held[: len(before)] == before
    assert held in (before, [*before, crashed_seq])
    for e in buf.entries():
        body, _env = buf.read(e.seq)
        if e.kind == "chunk":
            assert hashlib.sha256(body).hexdigest() == e.sha256
    # Sequence numbers continue without reuse, and the chain verifies.
    nxt, _ = buf.commit_event("after", "start", None, None)
    assert nxt.seq == held[-1] + 1
    chain = [buf.read(s)[1] for s in [*held, nxt.seq]]
    assert verify_chain(chain, key.public).ok
    buf.close()


def prepared(tmp_path: Path) -> tuple[Path, SigningKey, list[int]]:
    key = SigningKey.generate()
    root = tmp_path / "live"
    buf = ChunkBuffer(root, key, FakeClock())
    buf.open()
    buf.commit_event("rec", "start", "o1", None)
    buf.commit_chunk(media(3000), FakeMeta(start_ms=buf.clock.now_ms()), recording_id="rec", index=0,
                     officer_id="o1", case_step=None)
    buf.close()
    return root, key, [0, 1]


@pytest.mark.parametrize("path_name", ["commit_chunk", "commit_event"])
def test_every_crash_point_of_a_commit(tmp_path: Path, path_name: str) -> None:
    root, key, before = prepared(tmp_path)
    base = snapshot(root)
    ops = JournalingOps(root)
    buf = ChunkBuffer(root, key, FakeClock(), ops=ops)
    buf.open(close_open_recording=False)
    ops.journal.clear()
    if path_name == "commit_chunk":
        buf.commit_chunk(media(5000), FakeMeta(start_ms=buf.clock.now_ms()), recording_id="rec", index=1,
                         officer_id="o1", case_step=None)
    else:
        buf.commit_event("rec", "stop", "o1", None, chunks=1)
    journal = list(ops.journal)
    kinds = [op.kind for op in journal]
    # Data first, made durable, then the rename (the commit point), then the directory.
    first_rename = kinds.index("rename")
    assert kinds[0] == "create"
    assert set(kinds[1 : first_rename - 1]) == {"write"}
    assert kinds[first_rename - 1 : first_rename + 2] == ["fsync", "rename", "fsync_dir"]
    checked = 0
    for k in range(len(journal) + 1):
        for i, state in enumerate(power_cut_states(base, journal[:k])):
            target = tmp_path / f"cut-{k}-{i}"
            materialize(state, target)
            check_recovered(target, key, before, crashed_seq=2)
            checked += 1
    assert checked >= len(journal)  # every crash point, each with its variants


def test_every_crash_point_of_freeing_the_head(tmp_path: Path) -> None:
    root, key, _before = prepared(tmp_path)
    server = SigningKey.generate()
    buf = ChunkBuffer(root, key, FakeClock())
    buf.open(close_open_recording=False)
    head = buf.entries()[-1]
    receipt = Receipt(1, key.public.device_id, head.seq, head.entry_hash, "k", head.sha256, buf.clock.now_ms(),
                      None, None, server.key_id).sign(server).raw
    buf.close()
    base = snapshot(root)
    ops = JournalingOps(root)
    buf = ChunkBuffer(root, key, FakeClock(), ops=ops)
    buf.open(close_open_recording=False)
    ops.journal.clear()
    buf.accept_receipt(receipt, [server.public])
    journal = list(ops.journal)
    for k in range(len(journal) + 1):
        for i, state in enumerate(power_cut_states(base, journal[:k])):
            target = tmp_path / f"free-{k}-{i}"
            materialize(state, target)
            rebuilt = ChunkBuffer(target, key, FakeClock())
            rebuilt.open(close_open_recording=False)
            # Whether or not the free persisted, the head (seq 1) is known and the chain continues.
            assert rebuilt.head_seq == 1
            assert rebuilt.head_hash == head.entry_hash
            nxt, _ = rebuilt.commit_event("rec", "stop", None, None, chunks=1)
            assert nxt.seq == 2
            rebuilt.close()
