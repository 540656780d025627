"""A small synchronous client of the HTTP API for the CLI (standard library only).

Admin commands act on a running server through its API, never on its files: ``--data-dir`` only
tells the CLI where to find the server's URL and the admin token, which then authenticates like
any other token.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.errors import CustodyError
from server.datadir import DataDir


class ApiError(CustodyError):
    """The server answered with a problem document (or could not be reached)."""

    code = "api_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


@dataclass(frozen=True, slots=True)
class ApiClient:
    """Base URL plus bearer token."""

    url: str
    token: str
    cafile: str | None = None
    timeout: float = 30.0

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Send a request; return the decoded JSON, or raise :class:`ApiError` with the problem's code."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method, headers=headers)  # noqa: S310
        ctx = ssl.create_default_context(cafile=self.cafile) if self.url.startswith("https") else None
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=ctx) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.URLError as exc:
            raise self.error(exc) from None
        return json.loads(raw) if raw else None

    def error(self, exc: urllib.error.URLError) -> ApiError:
        """The :class:`ApiError` for a failed request: the problem's detail and code, or why it got no answer."""
        if isinstance(exc, urllib.error.HTTPError):
            raw = exc.read()
            try:
                problem = json.loads(raw)
                return ApiError(f"{problem.get('detail')} ({problem.get('code')}, HTTP {exc.code})",
                                code=problem.get("code"), status=exc.code)
            except (ValueError, AttributeError):
                return ApiError(f"HTTP {exc.code} from {self.url}", status=exc.code)
        return ApiError(f"cannot reach the server at {self.url}: {exc.reason}", code="unreachable")


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--server``, ``--token``, ``--data-dir`` and ``--cacert``: which server a command talks to."""
    parser.add_argument("--server", help="API base URL")
    parser.add_argument("--token", help="API token")
    parser.add_argument("--data-dir", help="data dir of a local server (its URL and admin token)")
    parser.add_argument("--cacert", help="CA certificate for an HTTPS server with a private CA")


def client_from_args(args: argparse.Namespace) -> ApiClient:
    """The client that the options of :func:`add_server_options` name, as :func:`resolve_client` picks it."""
    return resolve_client(args.server, args.token, args.data_dir, args.cacert)


def resolve_client(server: str | None, token: str | None, data_dir: str | None, cafile: str | None) -> ApiClient:
    """Pick URL and token: flags, then CUSTODY_SERVER/CUSTODY_TOKEN, then the data dir's files."""
    server = server or os.environ.get("CUSTODY_SERVER")
    token = token or os.environ.get("CUSTODY_TOKEN")
    if data_dir is not None and (server is None or token is None):
        d = DataDir(Path(data_dir))
        server = server or d.read_server_info()["url"]
        if token is None:
            try:
                token = d.admin_token.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ApiError(f"cannot read the admin token {d.admin_token}: {exc.strerror}") from None
    if not server or not token:
        raise ApiError("say which server: --server URL --token T, CUSTODY_SERVER and CUSTODY_TOKEN, or --data-dir DIR",
                       code="no_server")
    return ApiClient(server, token, cafile)
