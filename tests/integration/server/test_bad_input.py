"""A named corpus of bad requests: each gets its specific 4xx and code, nothing is stored (except the
evidence of a conflict), and the server keeps serving.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from yarl import URL

from custody.clock import FakeClock
from protocol.canonical import b64e
from protocol.envelope import Envelope
from protocol.httpsig import sign_request
from protocol.keys import SigningKey
from protocol.messages import EnrollmentRequest
from server.app import RunningServer
from server.db import schema
from tests.helpers.device import Reply, SimDevice
from tests.helpers.media import make_chunk
from tests.integration.server.conftest import Api

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


@dataclass
class World:
    """What a case can use: the server, an admin, an officer, an enrolled device with one chunk verified."""

    server: RunningServer
    admin: Api
    officer: Api
    device: SimDevice
    clock: FakeClock
    token: str  # an unused enrollment token

    async def upload_target(self) -> tuple[dict[str, Any], bytes]:
        """Announce a new chunk and return its upload target and bytes."""
        chunk = make_chunk(seed=secrets.randbelow(1000) + 10)
        reply = await self.device.announce(self.device.manifest(chunk))
        assert reply.status == 201, reply.body
        return reply.json["upload"], chunk.data


Case = Callable[[World], Awaitable[Reply]]


async def _oversize_json(w: World) -> Reply:
    return await w.admin.call("POST", "/api/v1/users", raw=b'{"name":"' + b"a" * (2 << 20) + b'"}')


async def _oversize_entry(w: World) -> Reply:
    return await w.device.request("POST", "/api/v1/device/entries", b"{" + b" " * (2 << 20) + b"}")


async def _not_json(w: World) -> Reply:
    return await w.admin.call("POST", "/api/v1/users", raw=b"name=alice&role=admin")


async def _unknown_field(w: World) -> Reply:
    return await w.admin.call("POST", "/api/v1/users", {"name": "alice", "role": "officer", "is_admin": True})


async def _wrong_type(w: World) -> Reply:
    return await w.admin.call("POST", "/api/v1/officers", {"id": "o-9", "name": "N", "unit": "U", "cert_number": "C",
                                                          "cert_expires_ms": "next year"})


async def _bool_for_integer(w: World) -> Reply:
    return await w.admin.call("POST", "/api/v1/users", {"name": "alice", "role": "officer", "ttl_days": True})


async def _missing_field(w: World) -> Reply:
    return await w.admin.call("POST", "/api/v1/users", {"name": "alice"})


async def _unknown_role(w: World) -> Reply:
    return await w.admin.call("POST", "/api/v1/users", {"name": "alice", "role": "root"})


async def _sql_in_body(w: World) -> Reply:
    return await w.admin.call("POST", "/api/v1/users", {"name": "x'; DROP TABLE users;--", "role": "officer"})


async def _sql_in_path(w: World) -> Reply:
    return await w.admin.call("GET", "/api/v1/users/x'%20OR%20'1'='1")


async def _sql_in_query(w: World) -> Reply:
    return await w.admin.call("GET", "/api/v1/findings?code=x'%20OR%201=1--")


async def _traversal_in_device_id(w: World) -> Reply:
    url = URL(w.server.url + "/api/v1/devices/..%2F..%2Fkeys/states", encoded=True)
    async with w.admin.session.get(url, headers={"Authorization": f"Bearer {w.admin.token}"}) as r:
        return Reply(r.status, await r.read(), dict(r.headers))


async def _traversal_in_upload_key(w: World) -> Reply:
    target, data = await w.upload_target()
    url = URL(target["url"])
    evil = URL(w.server.url + "/api/v1/upload/..%2F..%2Fkeys%2Fserver.key?" + url.raw_query_string, encoded=True)
    async with w.admin.session.put(evil, data=data, headers=target["headers"]) as r:
        return Reply(r.status, await r.read(), dict(r.headers))


async def _missing_token(w: World) -> Reply:
    return await w.admin.call("GET", "/api/v1/users", token=None)


async def _not_bearer(w: World) -> Reply:
    return await w.admin.call("GET", "/api/v1/users", token=None, headers={"Authorization": "Basic YWRtaW46YWRtaW4="})


async def _unknown_token(w: World) -> Reply:
    return await w.admin.call("GET", "/api/v1/users", token="cst_" + secrets.token_urlsafe(32))


async def _expired_token(w: World) -> Reply:
    issued = await w.admin.ok("POST", "/api/v1/users/officer-1/tokens", {"ttl_days": 1})
    w.clock.advance(2 * 86400)
    return await w.admin.call("GET", "/api/v1/officers", token=issued["token"])


async def _revoked_token(w: World) -> Reply:
    issued = await w.admin.ok("POST", "/api/v1/users/officer-1/tokens", {})
    await w.admin.ok("POST", f"/api/v1/tokens/{issued['id']}/revoke")
    return await w.admin.call("GET", "/api/v1/officers", token=issued["token"])


async def _disabled_user(w: World) -> Reply:
    await w.admin.ok("POST", "/api/v1/users/officer-1/disable")
    return await w.officer.call("GET", "/api/v1/officers")


async def _wrong_role(w: World) -> Reply:
    return await w.officer.call("POST", "/api/v1/users", {"name": "mallory", "role": "admin"})


async def _device_on_admin_route(w: World) -> Reply:
    return await w.device.request("GET", "/api/v1/users")


async def _forged_request_signature(w: World) -> Reply:
    forger = SigningKey.generate()
    headers = sign_request(forger, "GET", "/api/v1/device/self", b"", w.clock.now_ms(), device_id=w.device.device_id)
    headers["Custody-Key-Id"] = w.device.key.key_id
    return await w.device.raw("GET", w.server.url + "/api/v1/device/self", b"", headers)


async def _replayed_request(w: World) -> Reply:
    body = w.device.event("stop", advance=False).raw
    headers = w.device.signed_headers("POST", "/api/v1/device/entries", body)
    first = await w.device.raw("POST", w.server.url + "/api/v1/device/entries", body, headers)
    assert first.status == 201
    return await w.device.raw("POST", w.server.url + "/api/v1/device/entries", body, headers)


async def _stale_request(w: World) -> Reply:
    return await w.device.request("GET", "/api/v1/device/self", now_ms=w.clock.now_ms() - 10 * 60_000)


async def _body_hash_mismatch(w: World) -> Reply:
    body = w.device.event("stop", advance=False).raw
    headers = w.device.signed_headers("POST", "/api/v1/device/entries", b"{}")
    return await w.device.raw("POST", w.server.url + "/api/v1/device/entries", body, headers)


async def _unknown_device(w: World) -> Reply:
    stranger = SimDevice(w.server.url, w.admin.session, w.clock)
    return await stranger.request("GET", "/api/v1/device/self")


async def _forged_entry_signature(w: World) -> Reply:
    env = w.device.event("stop", advance=False)
    obj = json.loads(env.raw)
    obj["sig"] = b64e(bytes(64))
    forged = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return await w.device.request("POST", "/api/v1/device/entries", forged)


async def _entry_signed_by_unknown_key(w: World) -> Reply:
    env = w.device.event("stop", advance=False)
    other = Envelope.sign(env.payload_type, env.payload, SigningKey.generate())
    return await w.device.request("POST", "/api/v1/device/entries", other.raw)


async def _entry_of_another_device(w: World) -> Reply:
    other = SimDevice(w.server.url, w.admin.session, w.clock)
    token = (await w.admin.ok("POST", "/api/v1/enrollment-tokens", {}))["token"]
    await other.enroll(token)
    return await w.device.request("POST", "/api/v1/device/entries", other.event("start").raw)


async def _non_canonical_entry(w: World) -> Reply:
    env = w.device.event("stop", advance=False)
    return await w.device.request("POST", "/api/v1/device/entries", json.dumps(json.loads(env.raw), indent=1).encode())


async def _not_an_entry(w: World) -> Reply:
    rotation = w.device.rotation(SigningKey.generate())
    return await w.device.request("POST", "/api/v1/device/entries", rotation.raw)


async def _wrong_content_hash(w: World) -> Reply:
    target, data = await w.upload_target()
    return await w.device.put(target, bytes([data[0] ^ 1]) + data[1:])


async def _wrong_size(w: World) -> Reply:
    target, data = await w.upload_target()
    return await w.device.put(target, data + b"\0")


async def _tampered_upload_url(w: World) -> Reply:
    target, data = await w.upload_target()
    target["url"] = target["url"].replace("sig=", "sig=0")
    return await w.device.put(target, data)


async def _expired_upload_url(w: World) -> Reply:
    target, data = await w.upload_target()
    w.clock.advance(3600)
    return await w.device.put(target, data)


async def _different_body_for_existing_seq(w: World) -> Reply:
    other = make_chunk(seed=99)
    return await w.device.announce(w.device.manifest(other, seq=1, prev=w.device.prev, advance=False))


async def _reused_enrollment_token(w: World) -> Reply:
    await SimDevice(w.server.url, w.admin.session, w.clock).enroll(w.token)
    again = SimDevice(w.server.url, w.admin.session, w.clock)
    return await again.raw("POST", w.server.url + "/api/v1/enroll", again.enrollment_request(w.token).raw)


async def _expired_enrollment_token(w: World) -> Reply:
    w.clock.advance(2 * 86400)
    d = SimDevice(w.server.url, w.admin.session, w.clock)
    return await d.raw("POST", w.server.url + "/api/v1/enroll", d.enrollment_request(w.token).raw)


async def _unknown_enrollment_token(w: World) -> Reply:
    d = SimDevice(w.server.url, w.admin.session, w.clock)
    env = EnrollmentRequest(v=1, token=secrets.token_urlsafe(16), alg="ed25519", public_key=d.key.public.raw,
                            serial="S", model="M", firmware="F", time_ms=w.clock.now_ms(),
                            nonce=secrets.token_hex(16)).sign(d.key)
    return await d.raw("POST", w.server.url + "/api/v1/enroll", env.raw)


async def _enrollment_not_self_signed(w: World) -> Reply:
    d = SimDevice(w.server.url, w.admin.session, w.clock)
    env = d.enrollment_request(w.token)
    other = Envelope.sign(env.payload_type, env.payload, SigningKey.generate())
    return await d.raw("POST", w.server.url + "/api/v1/enroll", other.raw)


async def _stale_enrollment_request(w: World) -> Reply:
    d = SimDevice(w.server.url, w.admin.session, w.clock)
    env = d.enrollment_request(w.token, time_ms=w.clock.now_ms() - 3600_000)
    return await d.raw("POST", w.server.url + "/api/v1/enroll", env.raw)


async def _verify_before_upload(w: World) -> Reply:
    await w.upload_target()
    return await w.device.verify(w.device.seq - 1)


async def _verify_unknown_seq(w: World) -> Reply:
    return await w.device.verify(999)


async def _declared_chunk_too_large(w: World) -> Reply:
    chunk = make_chunk()
    return await w.device.announce(w.device.manifest(chunk, size=300 << 20, advance=False))


async def _method_not_allowed(w: World) -> Reply:
    return await w.admin.call("DELETE", f"/api/v1/devices/{w.device.device_id}")


async def _unknown_query_parameter(w: World) -> Reply:
    return await w.admin.call("GET", "/api/v1/findings?evil=1")


async def _query_wrong_type(w: World) -> Reply:
    return await w.admin.call("GET", "/api/v1/findings?limit=lots")


async def _assign_to_expired_officer(w: World) -> Reply:
    await w.admin.ok("POST", "/api/v1/officers", {"id": "off-old", "name": "N", "unit": "U", "cert_number": "OLD-1",
                                                  "cert_expires_ms": w.clock.now_ms() - DAY_MS})
    return await w.admin.call("POST", f"/api/v1/devices/{w.device.device_id}/assignments", {"officer_id": "off-old"})


async def _revive_revoked_device(w: World) -> Reply:
    other = SimDevice(w.server.url, w.admin.session, w.clock)
    token = (await w.admin.ok("POST", "/api/v1/enrollment-tokens", {}))["token"]
    await other.enroll(token)
    await w.admin.ok("POST", f"/api/v1/devices/{other.device_id}/state", {"state": "revoked"})
    return await w.admin.call("POST", f"/api/v1/devices/{other.device_id}/state", {"state": "active"})


async def _lost_device_rotates_key(w: World) -> Reply:
    await w.admin.ok("POST", f"/api/v1/devices/{w.device.device_id}/state", {"state": "lost"})
    return await w.device.request("POST", "/api/v1/device/key-rotation", w.device.rotation(SigningKey.generate()).raw)


async def _unknown_device_in_path(w: World) -> Reply:
    return await w.admin.call("GET", f"/api/v1/devices/{'a' * 24}")


#: name -> (case, status, code, whether its setup legitimately stores something first)
CORPUS: dict[str, tuple[Case, int, str]] = {
    "oversize_json_body": (_oversize_json, 413, "payload_too_large"),
    "oversize_entry_body": (_oversize_entry, 413, "payload_too_large"),
    "body_not_json": (_not_json, 400, "bad_json"),
    "unknown_field": (_unknown_field, 400, "unknown_field"),
    "wrong_type": (_wrong_type, 400, "wrong_type"),
    "boolean_for_integer": (_bool_for_integer, 400, "wrong_type"),
    "missing_field": (_missing_field, 400, "missing_field"),
    "unknown_role": (_unknown_role, 400, "bad_value"),
    "sql_metacharacters_in_body": (_sql_in_body, 400, "bad_value"),
    "sql_metacharacters_in_path": (_sql_in_path, 400, "bad_id"),
    "sql_metacharacters_in_query": (_sql_in_query, 400, "bad_value"),
    "path_traversal_in_device_id": (_traversal_in_device_id, 400, "bad_id"),
    "path_traversal_in_upload_key": (_traversal_in_upload_key, 400, "bad_id"),
    "missing_token": (_missing_token, 401, "missing_credentials"),
    "not_a_bearer_token": (_not_bearer, 401, "bad_token"),
    "unknown_token": (_unknown_token, 401, "bad_token"),
    "expired_token": (_expired_token, 401, "token_expired"),
    "revoked_token": (_revoked_token, 401, "token_revoked"),
    "disabled_user": (_disabled_user, 401, "user_disabled"),
    "wrong_role": (_wrong_role, 403, "forbidden_role"),
    "device_on_admin_route": (_device_on_admin_route, 403, "forbidden_role"),
    "forged_request_signature": (_forged_request_signature, 401, "bad_request_signature"),
    "replayed_request": (_replayed_request, 401, "replayed_request"),
    "stale_request": (_stale_request, 401, "stale_request"),
    "body_does_not_match_signed_hash": (_body_hash_mismatch, 401, "body_hash_mismatch"),
    "unknown_device": (_unknown_device, 401, "unknown_device"),
    "forged_entry_signature": (_forged_entry_signature, 422, "bad_signature"),
    "entry_signed_by_unknown_key": (_entry_signed_by_unknown_key, 422, "unknown_key"),
    "entry_of_another_device": (_entry_of_another_device, 403, "wrong_device"),
    "entry_not_canonical": (_non_canonical_entry, 400, "not_canonical"),
    "not_a_chain_entry": (_not_an_entry, 400, "wrong_payload_type"),
    "wrong_content_hash": (_wrong_content_hash, 400, "content_hash_mismatch"),
    "wrong_body_size": (_wrong_size, 400, "size_mismatch"),
    "tampered_upload_url": (_tampered_upload_url, 401, "bad_upload_signature"),
    "expired_upload_url": (_expired_upload_url, 401, "upload_url_expired"),
    "different_body_for_existing_seq": (_different_body_for_existing_seq, 409, "chunk_conflict"),
    "reused_enrollment_token": (_reused_enrollment_token, 409, "enrollment_token_used"),
    "expired_enrollment_token": (_expired_enrollment_token, 401, "enrollment_token_expired"),
    "unknown_enrollment_token": (_unknown_enrollment_token, 401, "enrollment_token_unknown"),
    "enrollment_request_not_self_signed": (_enrollment_not_self_signed, 422, "wrong_key"),
    "stale_enrollment_request": (_stale_enrollment_request, 401, "stale_request"),
    "verify_before_upload": (_verify_before_upload, 409, "not_uploaded"),
    "verify_unknown_seq": (_verify_unknown_seq, 404, "unknown_entry"),
    "declared_chunk_too_large": (_declared_chunk_too_large, 413, "chunk_too_large"),
    "method_not_allowed": (_method_not_allowed, 405, "method_not_allowed"),
    "unknown_query_parameter": (_unknown_query_parameter, 400, "unknown_field"),
    "query_parameter_wrong_type": (_query_wrong_type, 400, "wrong_type"),
    "assign_to_officer_with_expired_certificate": (_assign_to_expired_officer, 422, "officer_certificate_expired"),
    "revive_revoked_device": (_revive_revoked_device, 409, "illegal_state_change"),
    "lost_device_rotates_key": (_lost_device_rotates_key, 403, "device_not_active"),
    "unknown_device_in_path": (_unknown_device_in_path, 404, "unknown_device"),
}

#: Tables a refused request must leave alone (nonces are authentication state, not data).
WATCHED = ("users", "api_tokens", "officers", "enrollment_tokens", "devices", "device_keys", "device_states",
           "assignments", "entries", "conflicts", "findings", "server_keys")


async def snapshot(server: RunningServer) -> dict[str, Any]:
    """Row counts, used enrollment tokens, and the files in the footage store."""
    out: dict[str, Any] = {}
    async with server.services.db.read() as conn:
        for name in WATCHED:
            table = schema.metadata.tables[name]
            out[name] = (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
        out["tokens_used"] = (await conn.execute(sa.select(sa.func.count()).select_from(schema.enrollment_tokens)
                                                 .where(schema.enrollment_tokens.c.used_ms.is_not(None)))).scalar_one()
        out["entry_states"] = sorted((await conn.execute(sa.select(schema.entries.c.seq, schema.entries.c.state)
                                                         )).all())
    root = server.services.config.data_dir / "footage"
    out["files"] = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return out


@pytest.mark.parametrize("name", sorted(CORPUS))
async def test_bad_request(name: str, server: RunningServer, admin: Api, clock: FakeClock) -> None:
    officer = await admin.user("officer-1", "officer")
    device = await admin.enroll(clock)
    await device.announce(device.event("start"))
    await device.deliver()
    token = (await admin.ok("POST", "/api/v1/enrollment-tokens", {"ttl_s": 3600}))["token"]
    world = World(server, admin, officer, device, clock, token)
    case, status, code = CORPUS[name]

    # Set-up steps inside a case (a second device, an announced chunk, a token) are legitimate; the
    # snapshot is taken by a wrapper around the one bad request each case ends with.
    before: dict[str, Any] = {}
    original_raw = SimDevice.raw
    original_call = Api.call

    async def snap_then(fn: Any, *args: Any, **kwargs: Any) -> Reply:
        before.clear()
        before.update(await snapshot(server))
        reply: Reply = await fn(*args, **kwargs)
        return reply

    async def raw(self: SimDevice, *args: Any, **kwargs: Any) -> Reply:
        return await snap_then(original_raw, self, *args, **kwargs)

    async def call(self: Api, *args: Any, **kwargs: Any) -> Reply:
        return await snap_then(original_call, self, *args, **kwargs)

    SimDevice.raw = raw  # type: ignore[method-assign]
    Api.call = call  # type: ignore[method-assign]
    session_request = admin.session._request

    async def request(*args: Any, **kwargs: Any) -> Any:
        before.clear()
        before.update(await snapshot(server))
        return await session_request(*args, **kwargs)

    admin.session._request = request  # type: ignore[method-assign]
    try:
        reply = await case(world)
    finally:
        SimDevice.raw = original_raw  # type: ignore[method-assign]
        Api.call = original_call  # type: ignore[method-assign]
        admin.session._request = session_request  # type: ignore[method-assign]

    assert (reply.status, reply.code) == (status, code), reply.body
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    problem = reply.json
    assert problem["status"] == status
    assert problem["type"].endswith(code)
    assert problem["detail"]
    after = await snapshot(server)
    if name == "different_body_for_existing_seq":
        # The one exception: the conflicting entry is kept aside as evidence, and flagged.
        assert after["conflicts"] == before["conflicts"] + 1
        assert after["findings"] == before["findings"] + 1
        before["conflicts"], before["findings"] = after["conflicts"], after["findings"]
    assert after == before
    health = await admin.call("GET", "/healthz", token=None)
    assert health.status == 200  # still serving


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30
    assert len({(s, c) for _, s, c in CORPUS.values()}) >= 25  # specific codes, not one catch-all
