"""Free loopback ports, readiness waits and process clean-up shared by the service modules."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"

# How often to retry a start that lost a port race: the port is free when we pick it, but another
# process (a parallel test worker, or any client's ephemeral port) may take it before our service binds.
START_ATTEMPTS = 3


class ServiceStartError(RuntimeError):
    """A service did not come up; the message carries the tail of its log."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file, for error messages; empty if it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    interval: float = 0.05,
) -> float:
    """Poll ``ready()`` until it is true; return the seconds it took.

    Fails fast (instead of waiting out ``timeout``) when ``proc`` has exited, since a dead service
    will never become ready; either way the error carries the log tail so a CI log shows why.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if ready():
            return time.monotonic() - start
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log) if log else ""
            raise ServiceStartError(f"{what} exited with code {proc.returncode} before it was ready\n{tail}")
        if time.monotonic() > deadline:
            tail = log_tail(log) if log else ""
            raise ServiceStartError(f"{what} not ready after {timeout:.0f} s\n{tail}")
        time.sleep(interval)


_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None
    return prctl


# Looked up once in the parent: the child of a fork from a threaded process (paho runs threads)
# must not dlopen or take other locks before exec, so the preexec hook only calls this pointer.
_PRCTL = _load_prctl()


def die_with_parent() -> None:
    """``preexec_fn`` for service processes: the kernel sends SIGTERM to the child if pytest dies.

    Without it a pytest killed by a timeout or ^C would leave brokers and LocalStack running,
    holding ports and half a gigabyte of memory, until the machine is recycled.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def terminate(proc: subprocess.Popen[bytes], *, grace: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """Stop ``proc`` with ``sig`` (its process group too), then SIGKILL after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    try:
        # Services start in their own session so helper processes they fork go down with them.
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
