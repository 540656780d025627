"""systemd's notify protocol (sd_notify) in a few lines of socket code, no extra dependency.

The Pi's unit (deploy/pi/custody-agent.service) is ``Type=notify`` with ``WatchdogSec=30``:
``custody agent run`` sends ``READY=1`` once it is armed, then ``WATCHDOG=1`` from its event loop at
least every 10 s (:func:`watchdog_interval` says how often systemd wants it). A hung loop stops
the pings and systemd restarts the agent.
Outside systemd (tests, a shell) there is no ``$NOTIFY_SOCKET`` and every call is a cheap no-op.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

READY = "READY=1"
WATCHDOG = "WATCHDOG=1"
STOPPING = "STOPPING=1"
RELOADING = "RELOADING=1"


def status(text: str) -> str:
    """A one-line ``STATUS=`` message, shown by ``systemctl status``."""
    return "STATUS=" + " ".join(text.split())


def notify(state: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``READY=1``, ``WATCHDOG=1``, ``STATUS=...``; several joined by newlines) to systemd.

    True when the datagram was sent; False when not run by systemd or the socket is gone, which
    must never stop the agent (it would then fail exactly when systemd is not watching).
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False  # not set, or a vsock/other address this tiny client does not speak
    if address[0] == "@":
        address = "\0" + address[1:]  # Linux abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), address)
    except OSError:
        return False
    return True


def watchdog_interval(*, environ: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``WatchdogSec``, or None when no watchdog is set.

    systemd sets ``WATCHDOG_USEC``, and ``WATCHDOG_PID`` naming the process it watches; a child
    that inherited them is not that process and must not ping.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    watched = env.get("WATCHDOG_PID", "")
    if watched and (not watched.isdigit() or int(watched) != (os.getpid() if pid is None else pid)):
        return None
    return int(usec) / 2_000_000
