"""systemd notification (sd_notify) without a dependency: READY=1 at start, WATCHDOG=1 while alive."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` to $NOTIFY_SOCKET; False when not run by systemd (or the socket is gone)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(state.encode())
    except OSError:
        return False
    return True
