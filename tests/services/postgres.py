"""A throwaway PostgreSQL cluster on a free loopback port, and fresh databases in it."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.services.ports import LOOPBACK, START_ATTEMPTS, ServiceStartError, free_port, log_tail

START_TIMEOUT = 30
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def find_pg_bin() -> Path:
    """Directory holding initdb and pg_ctl: $PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    env = os.environ.get("PG_BIN")
    if env:
        return Path(env)

    def version(path: str) -> tuple[int, ...]:
        # /usr/lib/postgresql/15/bin -> (15,); sort numerically so 10 comes after 9.
        return tuple(int(p) for p in Path(path).parent.name.split(".") if p.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)
    for candidate in reversed(found):
        if os.access(Path(candidate) / "initdb", os.X_OK):
            return Path(candidate)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ServiceStartError(
        "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
        "run `make system-deps` or `apt-get install postgresql`"
    )


@dataclass(frozen=True)
class PostgresDatabase:
    """A database created for one test (the ``postgres_db`` fixture)."""

    name: str
    dsn: str  # postgresql://postgres@127.0.0.1:PORT/NAME (asyncpg.connect, psql)
    async_url: str  # postgresql+asyncpg://postgres@127.0.0.1:PORT/NAME (SQLAlchemy create_async_engine)


class PostgresServer:
    """One PostgreSQL cluster in its own temp directory, trusting local connections as ``postgres``.

    As root, initdb refuses to run, so the cluster belongs to the ``postgres`` system user and the
    server binaries run through ``runuser``; as any other user they run directly as that user.
    """

    host = LOOPBACK
    user = "postgres"

    def __init__(self) -> None:
        """Prepare (not start) a cluster; its directory is made by :meth:`start`."""
        self.bin = find_pg_bin()
        self.port = free_port()
        self.dir: Path | None = None
        self.start_seconds: float | None = None
        self._as_postgres = os.geteuid() == 0

    @property
    def dsn(self) -> str:
        """libpq/asyncpg DSN of the ``postgres`` database."""
        return self.dsn_for("postgres")

    @property
    def async_url(self) -> str:
        """SQLAlchemy asyncpg URL of the ``postgres`` database."""
        return self.async_url_for("postgres")

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while the cluster runs (benchmarks read CPU time from /proc)."""
        if self.dir is None:
            return None
        try:
            return int((self.dir / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def dsn_for(self, database: str) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/<database>``."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def async_url_for(self, database: str) -> str:
        """``postgresql+asyncpg://postgres@127.0.0.1:PORT/<database>``."""
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"

    def _run(self, *args: str, owner: bool = True, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL binary; raise with its output on failure.

        ``owner``: run it as the cluster's owner (``postgres`` when we are root), as the server
        binaries must be; clients (createdb, dropdb) connect over TCP as any user.
        """
        cmd = [str(self.bin / args[0]), *args[1:]]
        if owner and self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            # The postgres user may not be allowed into our working directory; it owns self.dir.
            cwd=self.dir,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceStartError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
        return result

    def start(self) -> None:
        """initdb a new cluster, start it, and wait until it accepts connections."""
        began = time.monotonic()
        # Not under pytest's tmp_path: that tree is mode 0700 root, which the postgres user cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix="custody-pg-"))
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = self.dir / "data"
        # --no-sync: a throwaway cluster need not survive a power cut, and fsyncs cost seconds.
        self._run("initdb", "-D", str(data), "-A", "trust", "-U", self.user, "-E", "UTF8", "--no-sync")
        for attempt in range(START_ATTEMPTS):
            try:
                self._pg_ctl_start(data)
                break
            except ServiceStartError:
                if attempt == START_ATTEMPTS - 1:
                    raise
                self.port = free_port()  # lost the port to another process between pick and bind
        self.start_seconds = time.monotonic() - began

    def _pg_ctl_start(self, data: Path) -> None:
        assert self.dir is not None
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.dir}",  # Unix socket in our dir, not /var/run/postgresql (root-owned)
                f"-c listen_addresses={self.host}",
                # Durability of a test cluster is irrelevant; these make schema set-up and inserts fast.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                # Each test may create a database and an engine pool; leave room for parallel tests.
                "-c max_connections=200",
            ]
        )
        try:
            # -w waits until the server accepts connections, so no polling is needed here.
            self._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")
        except ServiceStartError as exc:
            raise ServiceStartError(f"{exc}\n{log_tail(self.dir / 'log')}") from None

    def stop(self) -> None:
        """Stop the cluster (fast mode: disconnect clients, no waiting) and remove its directory."""
        if self.dir is None:
            return
        data = self.dir / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(ServiceStartError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop", timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def create_database(self, name: str) -> str:
        """Create database ``name`` (lower-case identifier) and return its SQLAlchemy asyncpg URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")
        self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", self.user, name, owner=False)
        return self.async_url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, disconnecting anything still connected to it."""
        if not _DB_NAME.match(name):
            raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")
        self._run(
            "dropdb",
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-U",
            self.user,
            "--if-exists",
            "--force",
            name,
            owner=False,
        )

    def __repr__(self) -> str:
        return f"<PostgresServer {self.dsn}>"
