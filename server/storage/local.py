"""The local footage store: a directory where files are created once and never changed.

How write-once is approximated on a plain file system: bytes go to a staging file created with
``O_EXCL``, are fsynced, then hard-linked to their final name (``link`` fails when the name
exists, where ``rename`` would silently replace it), and the directory is fsynced (and so is each
directory the write had to create, up to the root: its name is then durable too). After
verification the file is made read-only. No code path here opens a final file for writing,
renames onto it, or deletes it. This makes the store tamper-EVIDENT, not tamper-proof: root can
still change a file, and the receipts and the log are what prove it was changed. Write-once
storage needs S3 Object Lock (see docs/STORAGE.md).

Layout: one directory per device, one file per chunk, ``DEVICE/SEQ-SHA256`` for the key
``DEVICE/SEQ/SHA256`` (conflicting bodies under ``conflicts/``). Stores written before 2026-11-23
kept a directory per chunk (``DEVICE/SEQ/SHA256``, the key itself); such files are still found,
read, sealed and expired where they are, and a key stored there is never written a second time.
A directory per chunk cost a directory inode and block for every chunk, and an ``mkdir`` and a
second new-inode allocation on the ingest path (about 3 % of the server's CPU at 600 devices).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import hmac
import mmap
import os
import secrets
import stat
import threading
from pathlib import Path
from urllib.parse import quote, urlencode

from server.storage.base import (
    ContentMismatch,
    FootageStore,
    ObjectExists,
    StoredObject,
    UploadTarget,
    check_warrant,
    is_valid_key,
)
from server.storage.grant import AccessGrant, require_grant

#: Route of the server's own upload endpoint (see server.routes).
UPLOAD_PATH = "/api/v1/upload/"


def upload_signature(secret: bytes, key: str, sha256: str, size: int, expires_ms: int) -> str:
    """HMAC the server puts in a local upload URL: it authorizes exactly this key, body and expiry."""
    msg = f"custody-upload-v1\n{key}\n{sha256}\n{size}\n{expires_ms}".encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


class LocalStore(FootageStore):
    """Footage under ``root``, one file per key."""

    kind = "local"
    write_once = False
    direct_upload = True

    def __init__(self, root: Path, *, base_url: str, upload_secret: bytes) -> None:
        self.root = root
        self.base_url = base_url.rstrip("/")
        self._secret = upload_secret
        self._staging = root / ".staging"

    async def start(self) -> None:
        """Create the directories."""
        await asyncio.to_thread(self._staging.mkdir, parents=True, exist_ok=True, mode=0o750)

    def set_base_url(self, base_url: str) -> None:
        """Set the API URL upload targets point at (known only once the listener is bound)."""
        self.base_url = base_url.rstrip("/")

    def _path(self, key: str) -> Path:
        """Where ``key``'s file is written: ``DEVICE/SEQ-SHA256`` under the root."""
        # Keys are validated before they become paths: nothing outside the root is reachable.
        if not is_valid_key(key):
            raise ValueError(f"invalid object key {key!r}")
        head, _, sha256 = key.rpartition("/")
        return self.root / f"{head}-{sha256}"

    def _paths(self, key: str) -> tuple[Path, Path]:
        """Where ``key``'s file may be: today's layout first, then the earlier one (the key itself)."""
        return self._path(key), self.root / key

    def file_of(self, key: str) -> Path | None:
        """The file holding ``key``'s bytes in either layout (see the module docstring), None if absent."""
        return next((path for path in self._paths(key) if path.exists()), None)

    def upload_target(self, key: str, sha256: str, size: int, now_ms: int, ttl_s: int) -> UploadTarget:
        """The server's own PUT endpoint, authorized by an HMAC over key, hash, size and expiry."""
        self._path(key)
        expires = now_ms + ttl_s * 1000
        query = urlencode(
            {"sha256": sha256, "size": size, "expires": expires,
             "sig": upload_signature(self._secret, key, sha256, size, expires)}
        )
        url = f"{self.base_url}{UPLOAD_PATH}{quote(key)}?{query}"
        return UploadTarget("PUT", url, {"Content-Type": "video/mp4"}, expires)

    def check_upload(self, key: str, sha256: str, size: int, expires_ms: int, sig: str) -> bool:
        """True when ``sig`` authorizes this upload (expiry is checked by the caller, who owns the clock)."""
        expected = upload_signature(self._secret, key, sha256, size, expires_ms)
        return hmac.compare_digest(expected, sig)

    async def put(self, key: str, data: bytes, sha256: str) -> bool:
        """Create the file once (see the module docstring)."""
        return await asyncio.to_thread(self._put_sync, key, data, sha256)

    def _put_sync(self, key: str, data: bytes, sha256: str) -> bool:
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ContentMismatch("data does not match its sha256")
        existing = self.file_of(key)
        if existing is not None:
            return self._same(existing, sha256)
        final = self._path(key)
        created: list[Path] = []  # the directories this write makes, deepest first
        directory = final.parent
        while directory != self.root and not directory.is_dir():
            created.append(directory)
            directory = directory.parent
        if created:
            final.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        staging = self._staging / secrets.token_hex(16)
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o640)
        try:
            view = memoryview(data)[_write_direct(fd, data):]
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(staging, final)  # fails if final exists: never replaces
        except FileExistsError:
            return self._same(final, sha256)
        finally:
            # The staging name is only a private handle on the same inode: it was never footage.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)
        _fsync_dir(final.parent)
        for directory in created:  # deepest first: each one's name, in the directory above it
            _fsync_dir(directory.parent)
        return True

    def _same(self, final: Path, sha256: str) -> bool:
        with final.open("rb") as f:
            existing = hashlib.file_digest(f, "sha256").hexdigest()
        if existing != sha256:
            raise ObjectExists(f"a different body is already stored under {final.relative_to(self.root)}")
        return False

    async def get(self, key: str, grant: AccessGrant) -> StoredObject | None:
        """Read the whole file (only under an access grant that covers ``key``)."""
        require_grant(grant, key)

        def read() -> StoredObject | None:
            for path in self._paths(key):
                try:
                    return StoredObject(path.read_bytes())
                except FileNotFoundError:
                    continue
            return None

        return await asyncio.to_thread(read)

    async def remove_expired(self, key: str, warrant: object) -> bool:
        """The one delete path of this store, for the expiry job only (check_warrant)."""
        check_warrant(key, warrant)

        def remove() -> bool:
            path = self.file_of(key)
            if path is None:
                return False
            try:
                os.unlink(path)
            except FileNotFoundError:
                return False
            _fsync_dir(path.parent)
            return True

        return await asyncio.to_thread(remove)

    async def seal(self, key: str) -> None:
        """Make the file read-only for everyone."""
        # A metadata change of a few microseconds: a worker-thread trip would cost more than it.
        today, earlier = self._paths(key)
        try:
            os.chmod(today, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        except FileNotFoundError:  # stored in the earlier layout
            os.chmod(earlier, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


#: O_DIRECT's alignment of memory, file offset and length (4096 also covers 512-byte devices).
DIRECT_ALIGN = 4096
#: Bodies up to this size are written with O_DIRECT (each worker thread keeps an aligned buffer
#: of the largest so far); larger ones, rare, go through the page cache.
DIRECT_MAX = 16 << 20

_buffers = threading.local()


def _write_direct(fd: int, data: bytes) -> int:
    """Write the block-aligned bulk of ``data`` to the new file ``fd`` bypassing the page cache
    (O_DIRECT); the number of bytes written, 0 where the file system does not take O_DIRECT.

    Footage is written once and read rarely, so copying it into the page cache buys nothing and
    evicts what the database needs. On this project's VM that copy was also the largest single
    cost of ingest under load (18 % of the server's CPU at 450 devices, `perf`): the guest
    returns free memory to the host, and every new page-cache page is first touched there. The
    bytes are copied once into a reused, page-aligned buffer instead. The unaligned tail is left
    to the caller's ordinary write, and the caller's fsync makes both durable.
    """
    aligned = len(data) - len(data) % DIRECT_ALIGN
    direct = getattr(os, "O_DIRECT", 0)
    if not aligned or not direct or len(data) > DIRECT_MAX:
        return 0
    buffer: mmap.mmap | None = getattr(_buffers, "buffer", None)
    if buffer is None or len(buffer) < aligned:
        if buffer is not None:
            buffer.close()
        buffer = _buffers.buffer = mmap.mmap(-1, aligned)  # anonymous mappings are page-aligned
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | direct)
    except OSError as exc:  # tmpfs and some others refuse O_DIRECT
        if exc.errno == errno.EINVAL:
            return 0
        raise
    done = 0
    try:
        buffer[:aligned] = memoryview(data)[:aligned]
        whole = memoryview(buffer)[:aligned]
        try:
            while done < aligned:
                done += os.write(fd, whole[done:])
        except OSError as exc:  # a short write left the rest unaligned: the caller writes it
            if exc.errno != errno.EINVAL:
                raise
        finally:
            whole.release()
    finally:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return done


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
