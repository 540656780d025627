"""The one small layer every buffer file operation goes through.

Footage must survive power loss at any instant, so the buffer only ever writes files atomically
and durably: write a temporary file created exclusively, fsync it, rename it into place, fsync
the directory. Keeping these operations in one class lets the power-loss test replace it with a
journaling version that records every operation and rebuilds the directory as a power cut at
each point would leave it (see tests/unit/agent/test_power_loss.py).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

TMP_SUFFIX = ".tmp"


class FileOps:
    """Atomic, durable file operations on the real file system."""

    def write_atomic(
        self, path: Path, data: bytes | Sequence[bytes], *, durable: bool = True, mode: int = 0o644
    ) -> None:
        """Create ``path`` with ``data`` (bytes, or parts written in order) so that it exists whole or not at all.

        ``durable`` adds the fsyncs that make it survive power loss once this returns; without it
        the write is still atomic against crashes of this process (used for rebuildable state).
        The temporary file is created exclusively: two writers can never interleave.
        """
        tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
        fd = self.open_exclusive(tmp, mode)
        try:
            self.write_all(fd, data)
            if durable:
                self.fsync(fd)
        finally:
            os.close(fd)
        self.rename(tmp, path)
        if durable:
            self.fsync_dir(path.parent)

    # -- primitives (overridden by the journaling test version) ---------------------------------

    def open_exclusive(self, path: Path, mode: int) -> int:
        """Open a new file for writing; fail if it exists (a stale temporary file is removed first)."""
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            # A temporary file left by a crash: it was never committed, so nothing refers to it.
            os.unlink(path)
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

    def write_all(self, fd: int, data: bytes | Sequence[bytes]) -> None:
        """Write every byte (os.write may write fewer); parts go out without being joined in memory."""
        if isinstance(data, bytes | bytearray | memoryview):
            parts = [memoryview(data)]
        else:
            parts = [memoryview(p) for p in data]
        while parts:
            n = os.writev(fd, parts)
            while parts and n >= len(parts[0]):
                n -= len(parts[0])
                parts.pop(0)
            if parts and n:
                parts[0] = parts[0][n:]

    def fsync(self, fd: int) -> None:
        """Flush a file's data and metadata to stable storage."""
        os.fsync(fd)

    def rename(self, src: Path, dst: Path) -> None:
        """Atomically replace ``dst`` with ``src``."""
        os.replace(src, dst)

    def fsync_dir(self, path: Path) -> None:
        """Make renames, creations and deletions in ``path`` durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: Path, *, durable: bool = False) -> None:
        """Remove a file (only ever a receipted chunk or a never-committed temporary file)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        if durable:
            self.fsync_dir(path.parent)

    # -- reading -----------------------------------------------------------------------------

    def read(self, path: Path) -> bytes:
        """A file's bytes."""
        return path.read_bytes()

    def listdir(self, path: Path) -> list[str]:
        """Names in a directory (sorted)."""
        return sorted(os.listdir(path))

    def makedirs(self, path: Path, mode: int = 0o700) -> None:
        """Create a directory (and parents) if missing, durably."""
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True, mode=mode)
            self.fsync_dir(path.parent)

    def free_bytes(self, path: Path) -> int:
        """Bytes available to this process on the file system holding ``path``."""
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize


def is_no_space(exc: OSError) -> bool:
    """True for 'no space left' and 'quota exceeded'."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)
