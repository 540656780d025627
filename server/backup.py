"""Backup and restore of a server's state: database, private keys and secrets (footage lives in its stores).

A backup directory holds::

    BACKUP/                     mode 0700
      backup.json               what is inside, with the sha256 of every file
      custody.sqlite3           SQLite: a consistent copy made with the sqlite3 backup API (safe while serving)
      database.pgdump           PostgreSQL: ``pg_dump --format=custom`` (instead of the SQLite file)
      keys/server-KEYID.key     the server's private signing keys, mode 0600
      upload-secret, admin-token

It deliberately leaves out the footage (it lives in its write-once stores and its second copy), the
``server.json`` of a running process, and the ``published-checkpoint`` file: that file is the guard
against a restored log rolling back past what was published (server/log_guard.py), so it must come
from outside the backup.

Backup and restore act on files, not through the HTTP API: the private keys never leave the host
through the API, by design, so only someone with the data directory can copy them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from protocol.errors import CustodyError
from server.config import ServerConfig
from server.datadir import DataDir

FORMAT = "custody-backup/1"
MANIFEST = "backup.json"
SQLITE_NAME = "custody.sqlite3"
PGDUMP_NAME = "database.pgdump"
#: Private files of the data directory that a restored server needs (relative names).
SECRET_FILES = ("upload-secret", "admin-token")


class BackupError(CustodyError):
    """A backup or restore cannot be made or would be unsafe; the message says why."""

    code = "backup_error"


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What a backup or restore did."""

    path: Path
    database: str
    files: dict[str, str]
    log_size: int | None

    def to_json(self) -> dict[str, Any]:
        """JSON form for the CLI."""
        return {"path": str(self.path), "database": self.database, "files": self.files, "log_size": self.log_size}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _copy_private(src: Path, dst: Path) -> None:
    """Copy ``src`` to a new file ``dst`` with mode 0600 (never replaces a file)."""
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
        shutil.copyfileobj(inp, out)
        out.flush()
        os.fsync(out.fileno())


def _pg_url(config: ServerConfig) -> tuple[str, dict[str, str]]:
    """The libpq URL of the configured PostgreSQL database and the environment carrying its password."""
    assert config.database.url is not None
    url = make_url(config.database.url).set(drivername="postgresql")
    env = dict(os.environ)
    password = config.database.password.reveal() if config.database.password else url.password
    if password:
        env["PGPASSWORD"] = str(password)
    return url.set(password=None).render_as_string(hide_password=False), env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"PostgreSQL backup and restore need {name}, which is not installed here: install the "
                          "PostgreSQL client tools (same major version as the server), or back the database up "
                          "with your usual PostgreSQL tooling and use this command for keys and secrets only")
    return path


def _log_size_sqlite(path: Path) -> int | None:
    """The transparency log's size in a SQLite copy (None before the log's tables exist)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        try:
            row = conn.execute("SELECT count(*) FROM log_leaves").fetchone()
        except sqlite3.OperationalError:
            return None
    return int(row[0])


def backup(config: ServerConfig, dest: Path) -> BackupReport:
    """Write a backup of the server configured by ``config`` into the new or empty directory ``dest``."""
    datadir = DataDir(config.data_dir)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: a backup goes into a new or empty directory")
    if dest.resolve().is_relative_to(datadir.root.resolve()):
        raise BackupError(f"{dest} is inside the data directory {datadir.root}: keep backups elsewhere")
    if not datadir.keys.is_dir():
        raise BackupError(f"{datadir.root} is not a server data directory (no keys/)")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(dest, 0o700)
    (dest / "keys").mkdir(mode=0o700)

    log_size: int | None = None
    # (1) the database, first: keys are only ever added, so keys copied afterwards cover every key it names.
    if config.database.url is None or make_url(config.database.url).get_backend_name() == "sqlite":
        src = Path(make_url(config.database.url).database or "") if config.database.url else datadir.sqlite_path
        if not src.is_file():
            raise BackupError(f"no database at {src}")
        kind = "sqlite"
        target = dest / SQLITE_NAME
        # The backup API copies a consistent snapshot page by page while the server keeps writing (WAL).
        with sqlite3.connect(f"file:{src}?mode=ro", uri=True) as source, sqlite3.connect(target) as copy:
            source.backup(copy)
        os.chmod(target, 0o600)
        log_size = _log_size_sqlite(target)
    else:
        kind = "postgresql"
        url, env = _pg_url(config)
        target = dest / PGDUMP_NAME
        done = subprocess.run([_tool("pg_dump"), "--format=custom", "--no-owner", f"--file={target}", url],
                              env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BackupError(f"pg_dump failed: {done.stderr.strip()}")
        os.chmod(target, 0o600)

    # (2) keys and secrets
    for key in sorted(datadir.keys.glob("server-*.key")):
        _copy_private(key, dest / "keys" / key.name)
    for name in SECRET_FILES:
        if (datadir.root / name).is_file():
            _copy_private(datadir.root / name, dest / name)

    # (3) the manifest, written last: a backup without it is incomplete and restore refuses it.
    files = {p.relative_to(dest).as_posix(): _sha256(p) for p in sorted(dest.rglob("*")) if p.is_file()}
    manifest = {"format": FORMAT, "created_ms": time.time_ns() // 1_000_000, "database": kind,
                "log_size": log_size, "files": files}
    tmp = dest / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, dest / MANIFEST)
    return BackupReport(dest, kind, files, log_size)


def read_manifest(src: Path) -> dict[str, Any]:
    """The manifest of a backup, after checking every file it lists against its sha256."""
    try:
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{src} has no {MANIFEST}: not a backup, or an incomplete one") from None
    except ValueError as exc:
        raise BackupError(f"{src / MANIFEST} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{src / MANIFEST} is not a {FORMAT} manifest")
    for name, digest in manifest["files"].items():
        path = src / name
        if not path.is_file():
            raise BackupError(f"the backup lists {name} but it is missing")
        if _sha256(path) != digest:
            raise BackupError(f"{name} in the backup does not match its sha256 in {MANIFEST}: the backup is damaged")
    return manifest


def restore(config: ServerConfig, src: Path, published_checkpoint: Path | None = None) -> BackupReport:
    """Restore the backup ``src`` into the data directory (and database) of ``config``; the server must be stopped.

    ``published_checkpoint`` is the last checkpoint the old server published (its data dir's
    ``published-checkpoint`` file, a witness's state, or the retained MQTT checkpoint): the
    restored server refuses to start if its log is behind it or inconsistent with it.
    """
    manifest = read_manifest(src)
    datadir = DataDir(config.data_dir)
    if datadir.server_info.exists():
        raise BackupError(f"a server may be running on {datadir.root} ({datadir.server_info.name} exists): stop it "
                          "first (remove the file if the server is gone)")
    existing_keys = list(datadir.keys.glob("server-*.key")) if datadir.keys.is_dir() else []
    if existing_keys:
        raise BackupError(f"{datadir.keys} already holds server keys: restore into a fresh data directory")
    datadir.ensure()

    # (1) the database
    kind = manifest["database"]
    configured = "sqlite" if config.database.url is None or make_url(
        config.database.url).get_backend_name() == "sqlite" else "postgresql"
    if kind != configured:
        raise BackupError(f"the backup holds a {kind} database but the configuration names a {configured} one")
    if kind == "sqlite":
        target = Path(make_url(config.database.url).database or "") if config.database.url else datadir.sqlite_path
        if target.exists():
            raise BackupError(f"{target} exists: restore into a fresh data directory")
        _copy_private(src / SQLITE_NAME, target)
    else:
        url, env = _pg_url(config)
        done = subprocess.run([_tool("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={url}",
                               str(src / PGDUMP_NAME)], env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BackupError(f"pg_restore failed (the target database must be empty): {done.stderr.strip()}")

    # (2) keys and secrets
    for key in sorted((src / "keys").glob("server-*.key")):
        _copy_private(key, datadir.keys / key.name)
    for name in SECRET_FILES:
        if (src / name).is_file() and not (datadir.root / name).exists():
            _copy_private(src / name, datadir.root / name)

    # (3) the published checkpoint comes from outside the backup; one already in the data dir is kept.
    if published_checkpoint is not None:
        text = published_checkpoint.read_text(encoding="utf-8")
        if datadir.published_checkpoint.exists():
            if datadir.published_checkpoint.read_text(encoding="utf-8") != text:
                raise BackupError(f"{datadir.published_checkpoint} exists and differs from {published_checkpoint}; "
                                  "keep the newer one there and run restore without --published-checkpoint")
        else:
            datadir.write_published_checkpoint(text)
    return BackupReport(datadir.root, kind, manifest["files"], manifest.get("log_size"))
