"""A real Mosquitto broker on a free loopback port, with stop/start for fault tests."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Protocol

from tests.services.ports import (
    LOOPBACK,
    START_ATTEMPTS,
    ServiceStartError,
    die_with_parent,
    free_port,
    port_accepts,
    terminate,
    wait_until,
)

# Debian installs the broker in /usr/sbin, which is not on a non-root user's PATH.
_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")
START_TIMEOUT = 10.0
_instance_ids = itertools.count()


def find_mosquitto() -> Path:
    """Path of the mosquitto binary: $MOSQUITTO, then PATH, then the usual sbin directories."""
    env = os.environ.get("MOSQUITTO")
    if env:
        return Path(env)
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    for candidate in _CANDIDATES:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    raise ServiceStartError(
        "mosquitto not found (PATH, /usr/sbin): run `make system-deps` or `apt-get install mosquitto`"
    )


class MosquittoBroker:
    """One Mosquitto process listening on ``127.0.0.1:port``.

    The port stays the same across :meth:`stop` / :meth:`start` / :meth:`restart`, so clients can
    reconnect to the same URL, as they would to a production broker that went down. Persistence is
    off: a restarted broker has forgotten sessions, retained messages and queued QoS 1 messages,
    which is the harsher case the agent and server must survive.
    """

    host = LOOPBACK

    def __init__(self, workdir: Path, extra_config: str = "", *, allow_anonymous: bool = True) -> None:
        """Prepare (not start) a broker whose files live in ``workdir``.

        ``extra_config`` is appended to the generated config: password_file, acl_file, extra
        listeners (take their ports from :func:`tests.services.ports.free_port`). It must not set
        ``persistence`` or ``log_dest``, and it sets ``allow_anonymous`` only through the argument.
        """
        self.binary = find_mosquitto()
        self.workdir = workdir
        self.extra_config = extra_config
        self.allow_anonymous = allow_anonymous
        self.port = free_port()
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (benchmarks read its CPU time from /proc)."""
        return self._proc.pid if self.running and self._proc is not None else None

    def config_text(self) -> str:
        """The config file the broker runs with."""
        return "\n".join(
            [
                f"listener {self.port} {self.host}",
                f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
                "persistence false",
                # Running as root, mosquitto would switch to the `mosquitto` user and then fail to
                # write its log or read password files in our root-owned temp dir; naming the
                # current user keeps it as it is (mosquitto ignores `user` when not root).
                f"user {pwd.getpwuid(os.geteuid()).pw_name}",
                f"log_dest file {self.log_path}",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "connection_messages true",
                "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                self.extra_config,
                "",
            ]
        )

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the broker and wait until its port accepts connections; no-op if it runs."""
        if self.running:
            return
        attempts = START_ATTEMPTS
        while True:
            try:
                self._start_once(timeout)
                return
            except ServiceStartError:
                attempts -= 1
                # A lost port race shows up as a bind error; once a broker has served on this port,
                # clients hold its URL, so only a first start may move to another port.
                if attempts == 0 or self.start_seconds is not None:
                    raise
                self.port = free_port()

    def _start_once(self, timeout: float) -> None:
        self.config_path.write_text(self.config_text())
        began = time.monotonic()
        with (self.workdir / "mosquitto.stderr").open("ab") as stderr:
            self._proc = subprocess.Popen(
                [str(self.binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        try:
            wait_until(
                lambda: port_accepts(self.host, self.port),
                timeout=timeout,
                what=f"mosquitto on port {self.port}",
                proc=self._proc,
                log=self.log_path,
            )
        except ServiceStartError as exc:
            terminate(self._proc)
            stderr_text = (self.workdir / "mosquitto.stderr").read_text(errors="replace")
            raise ServiceStartError(f"{exc}\n{stderr_text[-2000:]}") from None
        if self.start_seconds is None:
            self.start_seconds = time.monotonic() - began

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker: SIGTERM (clean), or SIGKILL with ``kill=True`` to simulate a crash."""
        if self._proc is not None:
            terminate(self._proc, sig=signal.SIGKILL if kill else signal.SIGTERM)
            self._proc = None

    def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down ``down_for`` seconds, start again on the same port."""
        self.stop()
        if down_for > 0:
            time.sleep(down_for)
        self.start()

    def __repr__(self) -> str:
        return f"<MosquittoBroker {self.url} running={self.running}>"


class MosquittoFactory(Protocol):
    """The ``mosquitto_factory`` fixture: starts one more broker per call, stopped after the test."""

    def __call__(self, extra_config: str = "", *, allow_anonymous: bool = True) -> MosquittoBroker:
        """Start a broker with ``extra_config`` appended to its config; return it running."""
        ...


def new_workdir(base: Path) -> Path:
    """A fresh directory under ``base`` for one broker instance."""
    path = base / f"mosquitto-{next(_instance_ids)}"
    path.mkdir(parents=True)
    return path
