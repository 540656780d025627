"""The data directory of an embedded server, and how the CLI finds a running local server.

Layout (documented in docs/SERVER.md)::

    DIR/                      mode 0700
      custody.sqlite3         metadata (SQLite, WAL mode: also -wal and -shm files)
      footage/                the local footage store (write-once files, read-only once verified)
        .staging/             private staging names used while a file is created
      keys/                   mode 0700: server signing keys, one file per key id, mode 0600
        server-KEYID.key
      admin-token             mode 0600: the first admin's API token, created at first start
      upload-secret           mode 0600: HMAC key of local-store upload URLs
      server.json             URL, pid and key fingerprint of the server running on DIR
      published-checkpoint    the last checkpoint this server published (never in a backup: the
                              guard against a restored log rolling back, server/log_guard.py)

``server.json`` is a convenience for ``--data-dir DIR`` on the CLI: it names the URL; the admin
token in ``admin-token`` is an ordinary API token, so every request still authenticates and is
logged like any other.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.errors import ConfigError


@dataclass(frozen=True, slots=True)
class DataDir:
    """Paths inside a data directory."""

    root: Path

    @property
    def sqlite_path(self) -> Path:
        """The SQLite database file."""
        return self.root / "custody.sqlite3"

    @property
    def footage(self) -> Path:
        """The local footage store's root."""
        return self.root / "footage"

    @property
    def keys(self) -> Path:
        """Directory of server signing keys."""
        return self.root / "keys"

    @property
    def admin_token(self) -> Path:
        """The first admin's API token."""
        return self.root / "admin-token"

    @property
    def upload_secret(self) -> Path:
        """HMAC key of local upload URLs."""
        return self.root / "upload-secret"

    @property
    def server_info(self) -> Path:
        """Where the running server records its URL."""
        return self.root / "server.json"

    @property
    def published_checkpoint(self) -> Path:
        """The last checkpoint the server published (signed note text)."""
        return self.root / "published-checkpoint"

    def write_published_checkpoint(self, text: str) -> None:
        """Replace the published-checkpoint file atomically and durably (mode 0600)."""
        tmp = self.published_checkpoint.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.published_checkpoint)

    def ensure(self) -> None:
        """Create the directory tree with private permissions."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.keys.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.keys, 0o700)

    def upload_secret_bytes(self) -> bytes:
        """The upload HMAC key, created at first use."""
        return read_or_create_secret(self.upload_secret, lambda: secrets.token_hex(32)).encode()

    def write_server_info(self, info: dict[str, Any]) -> None:
        """Record the running server's URL (replaced at each start: it is not evidence)."""
        tmp = self.server_info.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.server_info)

    def clear_server_info(self, pid: int) -> None:
        """Remove server.json if it still describes this process (clean shutdown)."""
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.server_info.read_text(encoding="utf-8")).get("pid") == pid:
                self.server_info.unlink()

    def read_server_info(self) -> dict[str, Any]:
        """The running server's URL and pid, for the CLI."""
        try:
            info = json.loads(self.server_info.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"no server is running on {self.root} ({self.server_info.name} is missing); "
                              f"start one with: custody server --data-dir {self.root}") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {self.server_info}: {exc}") from None
        if not isinstance(info, dict) or not isinstance(info.get("url"), str):
            raise ConfigError(f"{self.server_info} does not name a server URL")
        return info


def write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (O_EXCL: an existing file is never replaced)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_or_create_secret(path: Path, make: Any) -> str:
    """Read a private file, creating it with ``make()`` the first time (mode 0600)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = str(make())
        try:
            write_private(path, value + "\n")
        except FileExistsError:  # another process won the race: use its value
            return path.read_text(encoding="utf-8").strip()
        return value
