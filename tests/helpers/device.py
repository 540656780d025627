"""A device-side HTTP client for tests: enrolls, signs requests, builds a chain, uploads, verifies.

Independent of agent/ on purpose: the server's tests must not depend on the agent being right.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from custody.clock import Clock
from protocol.canonical import b64e
from protocol.enrollment import EnrollmentToken, open_enrollment_answer
from protocol.envelope import Envelope
from protocol.httpsig import H_ENTRY, sign_request
from protocol.keys import SigningKey
from protocol.messages import (
    GENESIS_PREV,
    ChunkManifest,
    EnrollmentAnswer,
    EnrollmentRequest,
    KeyRotation,
    RecordingEvent,
)
from tests.helpers.media import Chunk, make_chunk


@dataclass
class Reply:
    """An HTTP answer."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def json(self) -> Any:
        """Body as JSON."""
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """Problem code, if this is a problem document."""
        try:
            code = self.json.get("code")
            return str(code) if code is not None else None
        except (ValueError, AttributeError):
            return None


class SimDevice:
    """One simulated device talking to the server over HTTP."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession, clock: Clock, key: SigningKey | None = None,
                 ssl: Any = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.clock = clock
        self.key = key or SigningKey.generate()
        self.device_id = self.key.public.device_id
        self.ssl = ssl
        self.seq = 0
        self.prev = GENESIS_PREV
        self.recording_id = "rec-" + secrets.token_hex(4)
        self.index = 0
        self.officer_id: str | None = None
        #: The case step selected on the device: carried by every manifest and event while set.
        self.case_step: str | None = None
        self.answer: EnrollmentAnswer | None = None

    async def raw(self, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        """Any request, unsigned."""
        async with self.session.request(method, url, data=body, headers=headers or {}, ssl=self.ssl) as r:
            return Reply(r.status, await r.read(), dict(r.headers))

    def signed_headers(self, method: str, path: str, body: bytes, *, now_ms: int | None = None,
                       nonce: str | None = None) -> dict[str, str]:
        """Custody-* headers for a request."""
        return sign_request(self.key, method, path, body, self.clock.now_ms() if now_ms is None else now_ms, nonce,
                            device_id=self.device_id)

    async def request(self, method: str, path: str, body: bytes = b"", **kw: Any) -> Reply:
        """A signed request to ``path`` (path plus query, as signed)."""
        headers = {"Content-Type": "application/json", **self.signed_headers(method, path, body, **kw)}
        return await self.raw(method, self.base_url + path, body, headers)

    # -- enrollment ----------------------------------------------------------------------------

    def enrollment_request(self, token: str, *, secret_only: bool = False, time_ms: int | None = None) -> Envelope:
        """A self-signed EnrollmentRequest."""
        tok = EnrollmentToken.parse(token)
        req = EnrollmentRequest(v=1, token=tok.secret if secret_only else token, alg="ed25519",
                                public_key=self.key.public.raw, serial="SN-" + self.device_id[:6], model="test-cam",
                                firmware="1.0", time_ms=self.clock.now_ms() if time_ms is None else time_ms,
                                nonce=secrets.token_hex(16))
        return req.sign(self.key)

    async def enroll(self, token: str) -> EnrollmentAnswer:
        """Enroll and check the answer the way a device must."""
        env = self.enrollment_request(token, secret_only=len(token) > 200)
        reply = await self.raw("POST", self.base_url + "/api/v1/enroll", env.raw, {"Content-Type": "application/json"})
        assert reply.status == 201, reply.body
        answer, _cert = open_enrollment_answer(EnrollmentToken.parse(token), reply.body, self.key.public.raw)
        self.answer = answer
        return answer

    def rotation(self, new_key: SigningKey) -> Envelope:
        """A KeyRotation to ``new_key`` signed by the current key."""
        return KeyRotation(v=1, device_id=self.device_id, old_key_id=self.key.key_id, alg="ed25519",
                           new_public_key=new_key.public.raw, time_ms=self.clock.now_ms(),
                           nonce=secrets.token_hex(16)).sign(self.key)

    # -- the chain -------------------------------------------------------------------------------

    def _advance(self, env: Envelope) -> Envelope:
        self.prev = hashlib.sha256(env.raw).hexdigest()
        self.seq += 1
        return env

    def manifest(self, chunk: Chunk, *, seq: int | None = None, prev: str | None = None,
                 sha256: str | None = None, size: int | None = None, advance: bool = True,
                 officer_id: str | None = "", key: SigningKey | None = None) -> Envelope:
        """A signed manifest for ``chunk`` as the next entry (or as told)."""
        m = ChunkManifest(
            v=1, device_id=self.device_id, seq=self.seq if seq is None else seq,
            prev=self.prev if prev is None else prev, recording_id=self.recording_id, index=self.index,
            start_ms=self.clock.now_ms(), duration_ms=chunk.duration_ms,
            sha256=sha256 or chunk.sha256, size=size or len(chunk.data),
            officer_id=self.officer_id if officer_id == "" else officer_id, case_step=self.case_step, pre_event=False,
            codec=chunk.codec)
        env = m.sign(key or self.key)
        self.index += 1
        return self._advance(env) if advance else env

    def event(self, event: str, *, chunks: int | None = None, advance: bool = True) -> Envelope:
        """A signed recording event as the next entry."""
        e = RecordingEvent(v=1, device_id=self.device_id, seq=self.seq, prev=self.prev,
                           recording_id=self.recording_id, event=event, time_ms=self.clock.now_ms(),
                           officer_id=self.officer_id, case_step=self.case_step,
                           chunks=None if event == "start" else (chunks if chunks is not None else self.index),
                           reason=None)
        env = e.sign(self.key)
        return self._advance(env) if advance else env

    # -- ingest ------------------------------------------------------------------------------------

    async def announce(self, env: Envelope) -> Reply:
        """POST an entry."""
        return await self.request("POST", "/api/v1/device/entries", env.raw)

    async def put(self, target: dict[str, Any], data: bytes) -> Reply:
        """PUT bytes to an upload target, sending its headers verbatim."""
        return await self.raw(target["method"], target["url"], data, dict(target["headers"]))

    async def put_chunk(self, env: Envelope, data: bytes, *, seq: int | None = None,
                        device_id: str | None = None, entry: str | None = None) -> Reply:
        """PUT a chunk with its signed manifest in one request (the local store's direct delivery).

        ``seq``, ``device_id`` and ``entry`` (the header's text) override what the manifest says,
        for requests that must be refused.
        """
        m = ChunkManifest.peek(env)
        path = f"/api/v1/chunks/{device_id or m.device_id}/{m.seq if seq is None else seq}"
        return await self.raw("PUT", self.base_url + path, data,
                              {H_ENTRY: b64e(env.raw) if entry is None else entry,
                               "Content-Type": "application/octet-stream"})

    async def verify(self, seq: int) -> Reply:
        """Ask for verification."""
        return await self.request("POST", f"/api/v1/device/entries/{seq}/verify")

    async def deliver(self, chunk: Chunk | None = None, *, direct: bool = False) -> dict[str, Any]:
        """Announce, upload and verify the next chunk; return the verify answer.

        ``direct``: in one request with its manifest, as agents do on a server with the local store.
        """
        chunk = chunk or make_chunk()
        env = self.manifest(chunk)
        seq = self.seq - 1
        if direct:
            d = await self.put_chunk(env, chunk.data)
            assert d.status in (200, 201), d.body
            delivered: dict[str, Any] = d.json
            return delivered
        a = await self.announce(env)
        assert a.status in (200, 201), a.body
        p = await self.put(a.json["upload"], chunk.data)
        assert p.status in (200, 201), p.body
        if p.body.startswith(b"{") and p.json.get("receipt"):  # the server's own store verified as it stored
            answer: dict[str, Any] = p.json
            return answer
        v = await self.verify(seq)
        assert v.status == 200, v.body
        result: dict[str, Any] = v.json
        return result


def path_of(url: str) -> str:
    """Path plus query of a URL (what a signed request signs)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")
