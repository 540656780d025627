"""The device's HTTP client for the server: enrollment, and the ingest calls, all signed with the device key.

Errors are split the way the uploader needs them: :class:`Unreachable` (network down, server
down, 5xx, 429: try again later, with backoff) versus :class:`Refused` (a 4xx problem document:
the server has judged the request and retrying the same bytes will not help).

A device may know several API base URLs (server processes that share one database: see
docs/SERVER.md, "Running several server processes"). Signed requests go to the current one; when it
cannot be reached the same request, newly signed, goes to the next at once, and the device stays
with the one that answered. Every device call is idempotent on the server, so a request that
reached a process which died before answering is safe to repeat on another.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from agent.errors import AgentError
from custody.clock import Clock
from protocol.canonical import b64e
from protocol.enrollment import EnrollmentToken, open_enrollment_answer
from protocol.httpsig import H_ENTRY, sign_request
from protocol.keys import SigningKey
from protocol.messages import DeviceCertificate, EnrollmentAnswer, EnrollmentRequest

log = logging.getLogger(__name__)

FIRMWARE = "custody-agent/0.1.0"


class Unreachable(AgentError):
    """The server could not be reached or could not answer now; try again later."""

    code = "server_unreachable"


class Refused(AgentError):
    """The server refused the request (4xx) with a problem document."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"server refused ({status} {code}): {detail}", code=code)
        self.status = status


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


class ServerClient:
    """Signed requests from one device to its server (one of several processes, with ``fallback_urls``)."""

    def __init__(
        self,
        api_url: str,
        key: SigningKey,
        clock: Clock,
        *,
        device_id: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = 30.0,
        fallback_urls: Sequence[str] = (),
    ) -> None:
        urls = [u.rstrip("/") for u in (api_url, *fallback_urls)]
        #: Every API base URL this device may use, in the order given (duplicates dropped).
        self.api_urls = list(dict.fromkeys(urls))
        self._current = 0
        self.key = key
        # A device keeps the id of its first key across key rotations.
        self.device_id = device_id or key.public.device_id
        self.clock = clock
        self._session = session
        self._own_session = session is None
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    @property
    def api_url(self) -> str:
        """The API base URL requests go to now (the last one that answered)."""
        return self.api_urls[self._current]

    async def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
            self._own_session = True
        return self._session

    async def close(self) -> None:
        """Close the session if this client opened it."""
        if self._own_session and self._session is not None:
            await self._session.close()

    async def send(self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        """One request; classify failures as :class:`Unreachable` or :class:`Refused`."""
        session = await self._sess()
        try:
            async with session.request(method, url, data=body, headers=headers or {}) as r:
                data = await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"{method} {urlsplit(url).path}: {type(exc).__name__}: {exc}") from None
        if status >= 500 or status == 429:
            raise Unreachable(f"{method} {urlsplit(url).path}: server answered {status}")
        if status >= 400:
            try:
                problem = json.loads(data)
                code, detail = str(problem.get("code", "refused")), str(problem.get("detail", problem))
            except ValueError:
                code, detail = "refused", data[:200].decode("utf-8", "replace")
            raise Refused(status, code, detail)
        return Reply(status, data)

    async def signed(self, method: str, path: str, body: bytes = b"") -> Reply:
        """A request signed with the device key (path is path plus query, as signed).

        Tried on each known API URL in turn, from the current one, until one answers; raises the
        last :class:`Unreachable` when none does (the uploader's backoff then takes over).
        """

        def headers() -> dict[str, str]:
            # Signed anew for every attempt: the nonce of the first may be recorded (the database is shared).
            signed = sign_request(self.key, method, path, body, self.clock.now_ms(), device_id=self.device_id)
            return signed | {"Content-Type": "application/json"}

        return await self._on_any_server(method, path, body, headers)

    async def _on_any_server(self, method: str, path: str, body: bytes,
                             headers: Callable[[], dict[str, str]]) -> Reply:
        """Send to the current API URL, moving on to the next while one is unreachable."""
        failure: Unreachable | None = None
        for _ in self.api_urls:
            base = self.api_url
            try:
                return await self.send(method, base + path, body, headers())
            except Unreachable as exc:
                failure = exc
                # Only the first of several requests failing on one URL moves on: the others follow it
                # rather than each moving one further (two concurrent uploads would swap back).
                if len(self.api_urls) > 1 and self.api_url == base:
                    self._current = (self._current + 1) % len(self.api_urls)
                    log.warning("server %s unreachable (%s); switching to %s", base, exc.message, self.api_url)
        assert failure is not None
        raise failure

    # -- enrollment ----------------------------------------------------------------------------

    async def enroll(
        self, token: EnrollmentToken, *, serial: str, model: str, nonce: str
    ) -> tuple[EnrollmentAnswer, DeviceCertificate, bytes]:
        """Enroll with a one-time token; the answer is checked as the wire contract demands."""
        request = EnrollmentRequest(
            1, token.secret, "ed25519", self.key.public.raw, serial, model, FIRMWARE, self.clock.now_ms(), nonce
        )
        reply = await self.send(
            "POST", self.api_url + "/api/v1/enroll", request.sign(self.key).raw, {"Content-Type": "application/json"}
        )
        answer, cert = open_enrollment_answer(token, reply.body, self.key.public.raw)
        return answer, cert, reply.body

    # -- ingest --------------------------------------------------------------------------------

    async def announce(self, envelope: bytes) -> dict[str, Any]:
        """Announce an entry; a manifest's answer holds its upload target, an event's its receipt."""
        result: dict[str, Any] = (await self.signed("POST", "/api/v1/device/entries", envelope)).json()
        return result

    async def upload(self, target: dict[str, Any], data: bytes) -> str | None:
        """PUT the bytes to the target, with its headers verbatim (checksums, Object Lock headers).

        Returns the receipt when the target verified the bytes as it stored them (the server's own
        store does), else None: then the device asks for verification (an S3 store answers nothing
        a device could trust).
        """
        reply = await self.send(str(target["method"]), str(target["url"]), data,
                                {str(k): str(v) for k, v in target["headers"].items()})
        if not reply.body.startswith(b"{"):
            return None
        try:
            receipt = json.loads(reply.body).get("receipt")
        except (ValueError, AttributeError):
            return None
        return receipt if isinstance(receipt, str) else None

    async def deliver(self, seq: int, envelope: bytes, data: bytes) -> str | None:
        """PUT a chunk's bytes with its signed manifest (a server that stores footage itself).

        One request instead of announce-then-upload: the manifest, signed by the device key and
        naming the bytes' SHA-256 and size, is the request's credential. Returns the receipt, or
        None when the chunk failed verification (:meth:`verify` then says why). A server whose
        footage goes to S3 refuses with ``wrong_store``: announce for a presigned URL instead.
        """
        path = f"/api/v1/chunks/{self.device_id}/{seq}"
        headers = {H_ENTRY: b64e(envelope), "Content-Type": "application/octet-stream"}
        reply = await self._on_any_server("PUT", path, data, lambda: headers)
        receipt = reply.json().get("receipt")
        return receipt if isinstance(receipt, str) else None

    async def verify(self, seq: int) -> dict[str, Any]:
        """Ask the server to verify ``seq``; the answer holds the receipt when it passed."""
        result: dict[str, Any] = (await self.signed("POST", f"/api/v1/device/entries/{seq}/verify")).json()
        return result

    async def entry(self, seq: int) -> dict[str, Any]:
        """The server's view of one of this device's entries."""
        result: dict[str, Any] = (await self.signed("GET", f"/api/v1/device/entries/{seq}")).json()
        return result

    async def self_info(self) -> dict[str, Any]:
        """This device as the server sees it: state, assignment, server keys."""
        result: dict[str, Any] = (await self.signed("GET", "/api/v1/device/self")).json()
        return result
