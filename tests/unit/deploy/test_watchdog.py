"""agent/watchdog.py against a real unix datagram socket standing in for systemd's notify socket."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.watchdog import READY, STOPPING, WATCHDOG, notify, status, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket, like the one systemd passes in $NOTIFY_SOCKET."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield sock, str(path)


def test_ready_watchdog_and_status_reach_the_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path}
    assert notify(READY, environ=env)
    line = status("recording  case 12\nstep 3")  # one line, whatever the text holds
    assert notify(f"{WATCHDOG}\n{line}", environ=env)
    assert notify(STOPPING, environ=env)
    assert sock.recv(4096) == b"READY=1"
    assert sock.recv(4096) == b"WATCHDOG=1\nSTATUS=recording case 12 step 3"
    assert sock.recv(4096) == b"STOPPING=1"


def test_the_process_environment_is_used_by_default(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert notify(WATCHDOG)
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_abstract_namespace_sockets_are_addressed_with_a_leading_nul() -> None:
    name = f"custody-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert notify(READY, environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize("value", ["", "relative/path", "vsock:2:1234"])
def test_without_a_usable_socket_it_is_a_no_op(value: str) -> None:
    assert notify(READY, environ={"NOTIFY_SOCKET": value} if value else {}) is False


def test_a_socket_that_went_away_does_not_raise(tmp_path: Path) -> None:
    assert notify(WATCHDOG, environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_watchdog_interval_is_half_of_watchdog_sec_for_the_watched_process_only() -> None:
    me = os.getpid()
    assert watchdog_interval(environ={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(me)}) == 15.0
    assert watchdog_interval(environ={"WATCHDOG_USEC": "30000000"}) == 15.0  # older systemd: no PID
    assert watchdog_interval(environ={"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(me + 1)}) is None
    assert watchdog_interval(environ={}) is None
    assert watchdog_interval(environ={"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval(environ={"WATCHDOG_USEC": "soon"}) is None
