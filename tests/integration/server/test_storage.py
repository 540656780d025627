"""Footage stores on both backends: write once, never overwrite, and (S3) what the store itself enforces."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from botocore.exceptions import ClientError

from custody.clock import FakeClock
from server.services.expiry import ExpiryJob, ExpiryWarrant
from server.storage.base import FootageStore, ObjectExists, object_key
from server.storage.local import DIRECT_MAX, LocalStore
from server.storage.s3 import S3Store
from tests.helpers.grants import store_test_grant
from tests.integration.server.conftest import make_s3_store

pytestmark = pytest.mark.integration

GRANT = store_test_grant()
DEVICE = "a" * 24


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[FootageStore]:
    if request.param == "local":
        st: FootageStore = LocalStore(tmp_path / "footage", base_url="http://127.0.0.1:1", upload_secret=b"k" * 32)
    else:
        st = make_s3_store(request.getfixturevalue("s3"), request.getfixturevalue("s3_bucket"), clock)
    await st.start()
    yield st
    await st.close()


async def test_write_once(store: FootageStore) -> None:
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    key = object_key(DEVICE, 7, sha)
    assert await store.get(key, GRANT) is None
    assert await store.put(key, data, sha) is True
    assert await store.put(key, data, sha) is False  # same bytes again: nothing written
    other = os.urandom(5000)
    with pytest.raises((ObjectExists, ValueError)):
        await store.put(key, other, sha)  # bytes that do not match their hash never land
    got = await store.get(key, GRANT)
    assert got is not None
    assert got.data == data
    await store.seal(key)
    if isinstance(store, LocalStore):
        path = store.file_of(key)
        assert path == store.root / DEVICE / f"{7:012d}-{sha}"  # one directory per device, not per chunk
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        assert not list((store.root / ".staging").iterdir())
        with pytest.raises(ValueError):
            await store.get("../" + key, GRANT)
    else:
        assert got.lock_mode == "COMPLIANCE"
        assert got.store_sha256 == sha


async def test_local_store_still_serves_files_of_the_earlier_layout(tmp_path: Path) -> None:
    # Stores written before 2026-11-23 kept each chunk in a directory of its own (DEVICE/SEQ/SHA256).
    store = LocalStore(tmp_path / "footage", base_url="http://127.0.0.1:1", upload_secret=b"k" * 32)
    await store.start()
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    key = object_key(DEVICE, 3, sha)
    legacy = store.root / key
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(data)
    assert store.file_of(key) == legacy
    got = await store.get(key, GRANT)
    assert got is not None and got.data == data
    assert await store.put(key, data, sha) is False  # already stored: not written a second time
    assert not store._path(key).exists()
    legacy.write_bytes(data[::-1])  # changed where it lies: the next put reports it, and writes nothing
    with pytest.raises(ObjectExists):
        await store.put(key, data, sha)
    assert not store._path(key).exists()
    legacy.write_bytes(data)
    await store.seal(key)
    assert not legacy.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert await store.remove_expired(key, ExpiryWarrant(key, _job=ExpiryJob.__new__(ExpiryJob))) is True
    assert not legacy.exists() and store.file_of(key) is None and await store.get(key, GRANT) is None


async def test_s3_enforces_lock_checksum_and_signed_headers(s3_store: S3Store, clock: FakeClock) -> None:
    data = os.urandom(4096)
    sha = hashlib.sha256(data).hexdigest()
    key = object_key(DEVICE, 1, sha)
    target = s3_store.upload_target(key, sha, len(data), clock.now_ms(), 300)
    assert target.headers["x-amz-object-lock-mode"] == "COMPLIANCE"
    async with aiohttp.ClientSession() as s:
        # Other bytes with the signed checksum: refused by S3 itself.
        async with s.put(target.url, data=os.urandom(4096), headers=target.headers) as r:
            assert r.status == 400
            assert b"BadDigest" in await r.read()
        # Without the lock headers the signature does not match: refused.
        plain = {k: v for k, v in target.headers.items() if not k.startswith("x-amz-object-lock")}
        async with s.put(target.url, data=data, headers=plain) as r:
            assert r.status == 403
        async with s.put(target.url, data=data, headers=target.headers) as r:
            assert r.status == 200, await r.read()
    stored = await s3_store.get(key, GRANT)
    assert stored is not None
    assert stored.data == data
    assert stored.lock_mode == "COMPLIANCE"
    versions = s3_store.client.list_object_versions(Bucket=s3_store.bucket, Prefix=key)["Versions"]
    with pytest.raises(ClientError):
        s3_store.client.delete_object(Bucket=s3_store.bucket, Key=key, VersionId=versions[0]["VersionId"])
    assert (await s3_store.get(key, GRANT)) is not None


def _fs_type(path: Path) -> str:
    """The file system type of ``path``'s mount (the longest mount point that contains it)."""
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fs, *_ = line.split()
        if str(path.resolve()).startswith(mount.rstrip("/") + "/") and len(mount) > len(best):
            best, kind = mount, fs
    return kind


def _takes_o_direct(directory: Path) -> bool:
    probe = directory / ".o_direct_probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return True


@pytest.mark.parametrize("where", ["tmp_path", "/dev/shm"])
async def test_local_store_writes_every_size_exactly(where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    """The block-aligned bulk goes with O_DIRECT where the file system takes it (tmpfs does not:
    everything through the page cache), the tail through the page cache; the file is the bytes."""
    root = tmp_path if where == "tmp_path" else Path(where) / f"custody-test-{os.getpid()}-{tmp_path.name}"
    st = LocalStore(root / "footage", base_url="http://127.0.0.1:1", upload_secret=b"k" * 32)
    await st.start()
    direct_bytes: list[int] = []
    write = os.write

    def watched(fd: int, data: bytes | memoryview) -> int:
        written = write(fd, data)
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            direct_bytes.append(written)
        return written

    monkeypatch.setattr(os, "write", watched)
    try:
        sizes = [1, 4095, 4096, 4097, 619_506, 1_048_576 + 13, DIRECT_MAX + 1]
        for seq, size in enumerate(sizes):
            data = os.urandom(size)
            sha = hashlib.sha256(data).hexdigest()
            key = object_key(DEVICE, seq, sha)
            assert await st.put(key, data, sha) is True
            assert await st.put(key, data, sha) is False
            got = await st.get(key, GRANT)
            assert got is not None and got.data == data, size
        takes = _takes_o_direct(root / "footage")
        # Every aligned bulk up to DIRECT_MAX (the sizes from 4096 to 1 MiB + 13) bypassed the cache.
        expected = [4096, 4096, 619_506 - 619_506 % 4096, 1_048_576] if takes else []
        assert direct_bytes == expected, (where, takes)
        if _fs_type(root) in ("ext4", "xfs", "btrfs"):
            assert takes  # such a disk takes O_DIRECT: the direct path was the one checked
    finally:
        await st.close()
        if where != "tmp_path":
            shutil.rmtree(root, ignore_errors=True)
