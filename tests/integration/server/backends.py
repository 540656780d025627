"""Real PostgreSQL and LocalStack S3 for the server tests, until the shared fixtures (tests/services,
branch ``fixtures``) are on main; then these starters give way to them.

PostgreSQL: ``initdb``/``pg_ctl`` as user postgres on a free loopback port (PLATFORM-NOTES.md).
LocalStack: from ``.venv-s3`` (deploy/scripts/localstack-venv.sh), its Twisted listener held to
127.0.0.1 by a small boot shim, every phone-home switched off.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up in {timeout} s")


class Postgres:
    """A throwaway PostgreSQL cluster."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            raise RuntimeError("PostgreSQL server binaries are missing (make system-deps)")
        self.bin = Path(bins[-1])
        self.dir = Path(tempfile.mkdtemp(prefix="custody-pg-"))
        self.port = free_port()
        shutil.chown(self.dir, "postgres", "postgres")
        self._db_counter = 0

    def _as_postgres(self, *args: str) -> None:
        cmd = [str(a) for a in args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        """initdb and start."""
        self._as_postgres(str(self.bin / "initdb"), "-D", f"{self.dir}/data", "-A", "trust", "-U", "postgres")
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", f"{self.dir}/data", "-w", "-o",
                          f"-p {self.port} -k {self.dir} -c listen_addresses={LOOPBACK} -c fsync=off "
                          "-c max_connections=200", "-l", f"{self.dir}/log", "start")

    def stop(self) -> None:
        """Stop and remove."""
        try:
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", f"{self.dir}/data", "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        self._db_counter += 1
        name = f"custody_{os.getpid()}_{self._db_counter}"
        self._as_postgres(str(self.bin / "createdb"), "-h", LOOPBACK, "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+asyncpg://postgres@{LOOPBACK}:{self.port}/{name}"


_BOOT = textwrap.dedent('''
    import runpy, sys
    from twisted.internet import endpoints
    HOST = sys.argv[1]
    _orig = endpoints.TCP4ServerEndpoint
    class _Loopback(_orig):
        def __init__(self, reactor, port, backlog=50, interface=""):
            super().__init__(reactor, port, backlog, interface or HOST)
    endpoints.TCP4ServerEndpoint = _Loopback
    sys.argv = [sys.argv[0]]
    runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)
''')


class LocalStack:
    """LocalStack serving S3 on a loopback port."""

    access_key = "test"
    secret_key = "test"
    region = "us-east-1"

    def __init__(self) -> None:
        self.python = REPO / ".venv-s3" / "bin" / "python"
        if not self.python.exists():
            raise RuntimeError(f"{self.python} missing: build it with deploy/scripts/localstack-venv.sh")
        self.dir = Path(tempfile.mkdtemp(prefix="custody-s3-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._buckets = 0

    @property
    def endpoint_url(self) -> str:
        """Endpoint for boto3."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        """Start and wait for S3."""
        boot = self.dir / "boot.py"
        boot.write_text(_BOOT)
        dead = "http://127.0.0.1:9"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALSTACK_", "PYTHON", "VIRTUAL_ENV",
                                                                          "AWS_"))}
        for d in ("volume", "config", "tmp", "home", "fs"):
            (self.dir / d).mkdir()
        env.update({
            "SERVICES": "s3", "EAGER_SERVICE_LOADING": "1", "GATEWAY_LISTEN": f"{LOOPBACK}:{self.port}",
            "S3_SKIP_SIGNATURE_VALIDATION": "0", "PERSISTENCE": "0", "OVERRIDE_IN_DOCKER": "0",
            "DISABLE_EVENTS": "1", "SKIP_SSL_CERT_DOWNLOAD": "1", "SKIP_INFRA_DOWNLOADS": "1", "DNS_ADDRESS": "0",
            "ANALYTICS_API": dead, "API_ENDPOINT": dead, "OUTBOUND_HTTP_PROXY": "", "OUTBOUND_HTTPS_PROXY": "",
            "FILESYSTEM_ROOT": str(self.dir / "fs"), "LOCALSTACK_VOLUME_DIR": str(self.dir / "volume"),
            "CONFIG_DIR": str(self.dir / "config"), "TMPDIR": str(self.dir / "tmp"), "HOME": str(self.dir / "home"),
        })
        with (self.dir / "log").open("ab") as log:
            self.proc = subprocess.Popen([str(self.python), str(boot), LOOPBACK], env=env, cwd=self.dir,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("LocalStack exited:\n" + (self.dir / "log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/_localstack/health", timeout=1) as r:  # noqa: S310
                    return json.load(r).get("services", {}).get("s3") in ("available", "running")
            except (OSError, ValueError):
                return False

        _wait(ready, timeout, "LocalStack S3")

    def stop(self) -> None:
        """Stop and remove."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def new_bucket_name(self) -> str:
        """A bucket name not used yet (the server creates it with Object Lock)."""
        self._buckets += 1
        return f"custody-test-{os.getpid()}-{self._buckets}"



