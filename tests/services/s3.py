"""A real S3 endpoint: LocalStack 4.9.2 in host mode, from its own venv (``.venv-s3``).

LocalStack is the only S3 endpoint installable here that enforces what Custody relies on: Object
Lock (a locked version cannot be deleted, COMPLIANCE retention cannot be shortened), checksum
headers (BadDigest) and presigned-URL signatures (see PLATFORM-NOTES.md for the comparison).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.services.ports import (
    LOOPBACK,
    START_ATTEMPTS,
    ServiceStartError,
    die_with_parent,
    free_port,
    log_tail,
    terminate,
    wait_until,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-s3"
# Runs LocalStack's runtime with its listener held to 127.0.0.1 (see the module's docstring).
BOOT_SCRIPT = Path(__file__).with_name("localstack_boot.py")
LOCALSTACK_VERSION = "4.9.2"
START_TIMEOUT = 90.0
REGION = "us-east-1"
ACCESS_KEY = "test"
SECRET_KEY = "test"
# A closed loopback port: a request aimed at it fails at once, and never leaves the machine.
_DEAD_ENDPOINT = "http://127.0.0.1:9"

# Everything that could make LocalStack talk to the outside world, switched off. Found by reading
# localstack/config.py, constants.py, utils/analytics/ and utils/ssl.py of 4.9.2:
OFFLINE_ENV: dict[str, str] = {
    # Analytics events, request counters and usage metrics (utils/analytics/*, aws/handlers/analytics.py).
    "DISABLE_EVENTS": "1",
    # Download of the *.localhost.localstack.cloud TLS certificate at start-up (utils/ssl.py).
    "SKIP_SSL_CERT_DOWNLOAD": "1",
    # Lazy downloads of third-party binaries (Java, OpenSearch, ...) by services that need them.
    "SKIP_INFRA_DOWNLOADS": "1",
    # No DNS server: it would bind port 53 on 0.0.0.0 and forward unknown names to 8.8.8.8.
    "DNS_ADDRESS": "0",
    # Belt and braces: should some code path still try the analytics or licensing API, it hits a
    # closed loopback port instead of localstack.cloud.
    "ANALYTICS_API": _DEAD_ENDPOINT,
    "API_ENDPOINT": _DEAD_ENDPOINT,
    # Outbound proxies LocalStack would otherwise take from the environment.
    "OUTBOUND_HTTP_PROXY": "",
    "OUTBOUND_HTTPS_PROXY": "",
}

_bucket_ids = itertools.count()


class LocalStackS3:
    """LocalStack serving S3 only, on ``127.0.0.1:port``, with all state in ``workdir``."""

    region = REGION
    access_key = ACCESS_KEY
    secret_key = SECRET_KEY
    host = LOOPBACK

    def __init__(self, workdir: Path, venv: Path = DEFAULT_VENV) -> None:
        """Prepare (not start) LocalStack from ``venv``; its files go under ``workdir``."""
        self.workdir = workdir
        self.venv = venv
        self.port = free_port()
        self.log_path = workdir / "localstack.log"
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: S3Client | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT``: pass it as boto3's ``endpoint_url``."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the LocalStack process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def environment(self) -> dict[str, str]:
        """The environment LocalStack runs with."""
        env = {
            k: v
            for k, v in os.environ.items()
            # Our own venv's or the user's settings must not leak into LocalStack's interpreter;
            # an auth token would make it call home to activate a licence.
            if not k.startswith(("LOCALSTACK_", "PYTHON", "VIRTUAL_ENV", "AWS_"))
        }
        root = self.workdir / "filesystem"
        env.update(OFFLINE_ENV)
        env.update(
            {
                "SERVICES": "s3",
                # EAGER so that "ready" means S3 is loaded, not loaded on the first request.
                "EAGER_SERVICE_LOADING": "1",
                "GATEWAY_LISTEN": f"{self.host}:{self.port}",
                "S3_SKIP_SIGNATURE_VALIDATION": "0",
                "PERSISTENCE": "0",
                # Host mode even inside a container, so paths below apply and nothing binds 0.0.0.0.
                "OVERRIDE_IN_DOCKER": "0",
                # Every directory LocalStack writes to, inside our temp dir (nothing in the repo or ~).
                "FILESYSTEM_ROOT": str(root),
                "LOCALSTACK_VOLUME_DIR": str(self.workdir / "volume"),
                "CONFIG_DIR": str(self.workdir / "config"),
                "TMPDIR": str(self.workdir / "tmp"),
                "HOME": str(self.workdir / "home"),
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        for d in ("volume", "config", "tmp", "home"):
            (self.workdir / d).mkdir(exist_ok=True)
        return env

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start LocalStack and wait until S3 answers ListBuckets; raise if it cannot."""
        python = self.venv / "bin" / "python"
        if not python.exists():
            # Fail, never skip: a missing S3 endpoint would silently drop the Object Lock checks.
            raise ServiceStartError(
                f"{python} missing: build it with `make s3-venv` (deploy/scripts/localstack-venv.sh)"
            )
        for attempt in range(START_ATTEMPTS):
            try:
                self._start_once(python, timeout)
                return
            except ServiceStartError:
                if attempt == START_ATTEMPTS - 1:
                    raise
                # Most likely another process took the port before LocalStack bound it.
                self.port = free_port()

    def _start_once(self, python: Path, timeout: float) -> None:
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(python), str(BOOT_SCRIPT), self.host],
                env=self.environment(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        try:
            wait_until(
                self._s3_ready,
                timeout=timeout,
                what=f"LocalStack S3 on port {self.port}",
                proc=self._proc,
                log=self.log_path,
                interval=0.2,
            )
            # The health check proves the gateway; a real signed call proves S3 itself is up.
            self.client().list_buckets()
        except Exception as exc:
            terminate(self._proc)
            self._proc = None
            raise ServiceStartError(f"{exc}\n{log_tail(self.log_path)}") from exc
        self.start_seconds = time.monotonic() - began

    def _s3_ready(self) -> bool:
        url = f"{self.endpoint_url}/_localstack/health"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - fixed http loopback URL
                health: dict[str, Any] = json.load(resp)
        except (OSError, ValueError):
            return False
        return health.get("services", {}).get("s3") in ("available", "running")

    def stop(self) -> None:
        """Stop LocalStack (SIGTERM, then SIGKILL if it hangs)."""
        if self._proc is not None:
            terminate(self._proc, grace=15.0)
            self._proc = None
        self._client = None

    def client(self) -> S3Client:
        """A boto3 S3 client for this endpoint (path-style: no DNS for bucket hostnames here)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=self.access_key,
                aws_secret_access_key=self.secret_key,
                config=Config(
                    signature_version="s3v4",
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 2, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=30,
                ),
            )
        return self._client

    def make_bucket(self, object_lock: bool = True) -> str:
        """Create a bucket with a name unique in this session; versioned with Object Lock by default."""
        name = f"custody-test-{next(_bucket_ids)}-{uuid.uuid4().hex[:10]}"
        client = self.client()
        if object_lock:
            # Object Lock can only be switched on at creation, and it turns versioning on with it.
            client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            client.create_bucket(Bucket=name)
        return name

    def __repr__(self) -> str:
        return f"<LocalStackS3 {self.endpoint_url} running={self.running}>"
