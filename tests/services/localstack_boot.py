"""Entry point run by ``.venv-s3/bin/python``: LocalStack's runtime, held to the loopback interface.

Usage: ``python localstack_boot.py HOST`` with GATEWAY_LISTEN=HOST:PORT in the environment.

Two guards are installed before LocalStack is imported:

1. Listen on HOST only. LocalStack 4.9.2's Twisted gateway (``localstack/runtime/server/twisted.py``)
   ignores the host of GATEWAY_LISTEN for IPv4 ("TODO: interface = host?") and listens on 0.0.0.0,
   which would expose the test S3 endpoint on every interface. (Its Hypercorn gateway honours the
   host but then serves TLS only.) So the Twisted IPv4 endpoint gets HOST as its interface.
2. No traffic off the machine. The environment already switches off analytics, certificate
   download and the DNS server (tests/services/s3.py), yet start-up still resolved
   ``s3.localhost.localstack.cloud`` through the machine's DNS server
   (``localstack/utils/aws/aws_stack.py:get_s3_hostname``), seen with strace. Rather than chase each
   such call, name resolution and connections are refused here for anything but loopback, and
   every refusal is logged with BLOCKED_MARKER so the test suite can assert there were none that
   mattered, and a reader of the log can see what LocalStack tried.

This file must not import anything from the project: it runs in the LocalStack venv.
"""

from __future__ import annotations

import ipaddress
import runpy
import socket
import sys
from typing import Any

BLOCKED_MARKER = "custody-offline-guard: blocked"
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def _is_local(host: Any) -> bool:
    """Whether ``host`` (name, literal or None) can only mean this machine, without asking DNS."""
    if host is None or host == "":
        return True  # passive/wildcard lookups used for binding, never a remote peer
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].rstrip(".").lower()
    if name in _LOCAL_NAMES:
        return True
    try:
        addr = ipaddress.ip_address(name)
    except ValueError:
        return False
    return addr.is_loopback or addr.is_unspecified


def _blocked(what: str, target: Any) -> OSError:
    sys.stderr.write(f"{BLOCKED_MARKER} {what} {target!r}\n")
    sys.stderr.flush()
    return OSError(f"{BLOCKED_MARKER} {what} {target!r}: the test S3 endpoint stays on loopback")


def _install_offline_guard() -> None:
    real_getaddrinfo = socket.getaddrinfo
    real_gethostbyname = socket.gethostbyname
    real_gethostbyname_ex = socket.gethostbyname_ex
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local(host):
            sys.stderr.write(f"{BLOCKED_MARKER} resolve {host!r}\n")
            raise socket.gaierror(socket.EAI_NONAME, f"{BLOCKED_MARKER} resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host: str) -> str:
        if not _is_local(host):
            sys.stderr.write(f"{BLOCKED_MARKER} resolve {host!r}\n")
            raise socket.gaierror(socket.EAI_NONAME, f"{BLOCKED_MARKER} resolve {host!r}")
        return real_gethostbyname(host)

    def gethostbyname_ex(host: str) -> Any:
        if not _is_local(host):
            sys.stderr.write(f"{BLOCKED_MARKER} resolve {host!r}\n")
            raise socket.gaierror(socket.EAI_NONAME, f"{BLOCKED_MARKER} resolve {host!r}")
        return real_gethostbyname_ex(host)

    def _check(sock: socket.socket, address: Any, what: str) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise _blocked(what, address)

    def connect(self: socket.socket, address: Any) -> None:
        _check(self, address, "connect")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check(self, address, "connect")
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        _check(self, args[-1], "sendto")
        return real_sendto(self, data, *args)

    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex
    socket.socket.connect = connect  # type: ignore[method-assign, assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign, assignment]
    socket.socket.sendto = sendto  # type: ignore[method-assign, assignment]


def _listen_only_on(host: str) -> None:
    from twisted.internet import endpoints

    original = endpoints.TCP4ServerEndpoint

    class HostTCP4ServerEndpoint(original):  # type: ignore[misc, valid-type]
        """TCP4ServerEndpoint that listens on ``host`` when no interface is given."""

        def __init__(self, reactor: Any, port: int, backlog: int = 50, interface: str = "") -> None:
            super().__init__(reactor, port, backlog, interface or host)

    endpoints.TCP4ServerEndpoint = HostTCP4ServerEndpoint


def main() -> None:
    """Install both guards for ``sys.argv[1]``, then run ``localstack.runtime.main``."""
    if len(sys.argv) != 2:
        sys.exit("usage: localstack_boot.py HOST")
    _install_offline_guard()
    _listen_only_on(sys.argv[1])
    sys.argv = [sys.argv[0]]
    runpy.run_module("localstack.runtime.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
