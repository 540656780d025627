"""Write a file whole or not at all, with exactly the mode (and group) asked for.

Used for files other programs read while we may be rewriting them (the broker's password and ACL
files) and for key material (TLS keys): a reader must never see half a file, and a key must never
exist, even for an instant, with looser permissions than it ends with.
"""

from __future__ import annotations

import grp
import os
from pathlib import Path


def resolve_group(group: int | str) -> int:
    """A group id from a name or an id; a name that does not exist is a :class:`LookupError`."""
    if isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise LookupError(f"no group named {group!r} on this machine") from None


def write_file_atomic(path: Path, data: bytes, *, mode: int, group: int | str | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably, with permission bits ``mode``.

    The temporary file is created exclusively with mode 0600 and only widened (``fchmod``) and
    given its group (``fchown``) before the rename, so no one outside the owner can open it while
    it is being written, whatever the umask. ``group`` lets a broker running as another user read
    a 0640 file; changing a file's group needs root or membership of that group.
    """
    gid = resolve_group(group) if group is not None else None
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Left by a writer that crashed before its rename: never visible under the real name.
        os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if gid is not None:
                os.fchown(fd, -1, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # The rename is durable only once the directory entry is on disk too.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
