"""The chunk backbone over HTTP, on both backends: announce, upload, verify, receipt; and its rules."""

from __future__ import annotations

import asyncio
import hashlib
import stat
from typing import Any

import pytest

from custody.clock import FakeClock
from protocol.envelope import Envelope
from protocol.keys import VerifyKey
from protocol.messages import Receipt
from server.app import RunningServer
from server.storage.local import LocalStore
from tests.helpers.media import make_chunk
from tests.integration.server.conftest import Api

pytestmark = pytest.mark.integration


def open_receipt(text: str, server: RunningServer) -> Receipt:
    """Check a receipt with the server's published key, as a device does."""
    env = Envelope.from_bytes(text.encode("ascii"))
    key = server.services.keyring.history[0]
    return Receipt.open(env, VerifyKey(key.alg, key.public_key))


async def findings(api: Api, device_id: str, code: str, open_only: bool = False) -> list[dict[str, Any]]:
    q = f"/api/v1/findings?device_id={device_id}&code={code}" + ("&open=true" if open_only else "")
    found: list[dict[str, Any]] = (await api.ok("GET", q))["findings"]
    return found


async def test_recording_is_receipted_end_to_end(any_server: RunningServer, any_admin: Api, clock: FakeClock) -> None:
    device = await any_admin.enroll(clock)
    start = await device.announce(device.event("start"))
    assert start.status == 201
    assert start.json["state"] == "verified"
    r0 = open_receipt(start.json["receipt"], any_server)
    assert (r0.seq, r0.object_key, r0.stored_sha256) == (0, "", None)

    chunk = make_chunk()
    env = device.manifest(chunk)
    announced = await device.announce(env)
    assert announced.status == 201, announced.body
    assert announced.json["state"] == "announced"
    assert announced.json["receipt"] is None
    target = announced.json["upload"]
    assert target["method"] == "PUT"
    assert target["expires_at"] > clock.now_ms()
    if any_server.services.store.kind == "s3":
        # The device must send the checksum and lock headers verbatim; S3 checks them.
        assert target["headers"]["x-amz-object-lock-mode"] == "COMPLIANCE"
        assert "x-amz-checksum-sha256" in target["headers"]
    put = await device.put(target, chunk.data)
    assert put.status in (200, 201), put.body
    verified = await device.verify(1)
    assert verified.status == 200, verified.body
    body = verified.json
    assert body["state"] == "verified"
    assert [s["status"] for s in body["verification"] if "number" in s][:4] == ["pass", "pass", "pass", "pass"]
    receipt = open_receipt(body["receipt"], any_server)
    assert receipt.seq == 1
    assert receipt.stored_sha256 == hashlib.sha256(chunk.data).hexdigest()
    assert receipt.entry_hash == env.hash.hex()
    assert receipt.object_key == f"{device.device_id}/000000000001/" \
        f"{receipt.stored_sha256}"
    # The entry's leaf is appended in the transaction that accepts it (transparency log).
    assert receipt.log_index is not None
    assert receipt.tree_size == receipt.log_index + 1

    # Idempotent: the same chunk again gets the very same receipt, by either door.
    again = await device.verify(1)
    assert again.json["receipt"] == body["receipt"]
    reannounce = await device.announce(env)
    assert reannounce.status == 200
    assert reannounce.json["receipt"] == body["receipt"]
    assert reannounce.json["upload"] is None

    stop = await device.announce(device.event("stop"))
    assert stop.json["state"] == "verified"
    # Stored bytes are what was sent; the local store made the file read-only.
    grant = any_server.services.ingest.read_grant
    assert grant is not None
    stored = await any_server.services.store.get(receipt.object_key, grant)
    assert stored is not None
    assert stored.data == chunk.data
    if any_server.services.store.kind == "local":
        assert isinstance(any_server.services.store, LocalStore)
        path = any_server.services.store.file_of(receipt.object_key)
        assert path is not None and path.is_relative_to(any_server.services.config.data_dir / "footage")
        mode = path.stat().st_mode
        assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    else:
        assert stored.lock_mode == "COMPLIANCE"
        assert stored.retain_until_ms is not None
    # The first keyframe is decoded after the receipt.
    for _ in range(100):
        entry = await any_admin.ok("GET", f"/api/v1/devices/{device.device_id}/entries?from_seq=1&limit=1")
        if entry["entries"][0]["decode"] is not None:
            break
        await asyncio.sleep(0.05)
    assert entry["entries"][0]["decode"] == "ok"
    assert await findings(any_admin, device.device_id, "chain.gap") == []


async def test_gap_is_provisional_and_closes_itself(any_server: RunningServer, any_admin: Api,
                                                    clock: FakeClock) -> None:
    device = await any_admin.enroll(clock)
    chunk = make_chunk()
    e0 = device.event("start")
    e1 = device.manifest(chunk)
    e2 = device.manifest(make_chunk(seed=1))
    e3 = device.event("stop")
    assert (await device.announce(e0)).status == 201
    # seq 1 and 2 are late: seq 3 opens a gap that is a finding, not a refusal.
    r3 = await device.announce(e3)
    assert r3.status == 201
    assert r3.json["verification"][2]["status"] == "provisional"
    gaps = await findings(any_admin, device.device_id, "chain.gap", open_only=True)
    assert [(g["evidence"]["first"], g["evidence"]["last"]) for g in gaps] == [(1, 2)]
    r2 = await device.announce(e2)
    assert r2.status == 201
    gaps = await findings(any_admin, device.device_id, "chain.gap", open_only=True)
    assert [(g["evidence"]["first"], g["evidence"]["last"]) for g in gaps] == [(1, 1)]
    r1 = await device.announce(e1)
    assert r1.status == 201
    assert await findings(any_admin, device.device_id, "chain.gap", open_only=True) == []
    assert len(await findings(any_admin, device.device_id, "chain.gap")) == 2  # kept, closed, on record
    assert await findings(any_admin, device.device_id, "chain.prev_mismatch") == []


async def test_conflicting_body_for_a_used_seq_is_refused_and_kept_aside(any_server: RunningServer, any_admin: Api,
                                                                         clock: FakeClock) -> None:
    device = await any_admin.enroll(clock)
    await device.announce(device.event("start"))
    original = make_chunk()
    first = await device.deliver(original)
    other = make_chunk(seed=7)
    forged = device.manifest(other, seq=1, prev=device.prev, advance=False)
    reply = await device.announce(forged)
    assert reply.status == 409
    assert reply.code == "chunk_conflict"
    assert reply.json["existing_entry_hash"] == first["entry_hash"]
    # The conflicting body is handed over and kept under conflicts/, never on the original's key.
    evidence = reply.json["evidence_upload"]
    put = await device.put(evidence, other.data)
    assert put.status in (200, 201), put.body
    grant = any_server.services.ingest.read_grant
    assert grant is not None
    kept = await any_server.services.store.get(f"conflicts/{device.device_id}/000000000001/"
                                               f"{hashlib.sha256(other.data).hexdigest()}", grant)
    assert kept is not None
    assert kept.data == other.data
    original_key = f"{device.device_id}/000000000001/{hashlib.sha256(original.data).hexdigest()}"
    stored = await any_server.services.store.get(original_key, grant)
    assert stored is not None
    assert stored.data == original.data
    entry = await any_admin.ok("GET", f"/api/v1/devices/{device.device_id}/entries/1")
    assert entry["receipt"] == first["receipt"]
    assert len(await findings(any_admin, device.device_id, "chunk.conflict")) == 1


async def test_lost_device_entries_are_stored_verified_and_untrusted(any_server: RunningServer, any_admin: Api,
                                                                    clock: FakeClock) -> None:
    device = await any_admin.enroll(clock)
    await device.announce(device.event("start"))
    await device.deliver()
    changed = await any_admin.ok("POST", f"/api/v1/devices/{device.device_id}/state",
                                 {"state": "lost", "reason": "reported stolen"})
    assert changed["cutoff_seq"] == 1
    assert changed["state"] == "lost"
    after = await device.deliver(make_chunk(seed=3))  # never refused, never dropped
    assert after["state"] == "verified"
    assert after["trusted"] is False
    untrusted = await findings(any_admin, device.device_id, "entry.untrusted")
    assert [f["seq"] for f in untrusted] == [2]
    before = await any_admin.ok("GET", f"/api/v1/devices/{device.device_id}/entries/1")
    assert before["trusted"] is True
    # Back in service: later entries are trusted again; the ones made while lost stay untrusted.
    await any_admin.ok("POST", f"/api/v1/devices/{device.device_id}/state", {"state": "active"})
    later = await device.deliver(make_chunk(seed=4))
    assert later["trusted"] is True
    history = await any_admin.ok("GET", f"/api/v1/devices/{device.device_id}/states")
    assert [(s["state"], s["cutoff_seq"]) for s in history["states"]] == [("active", None), ("lost", 1),
                                                                           ("active", 2)]


async def test_officer_mismatch_and_expired_certificate(server: RunningServer, admin: Api, clock: FakeClock) -> None:
    now = clock.now_ms()
    day = 86_400_000
    await admin.ok("POST", "/api/v1/officers", {"id": "off-1", "name": "张三", "unit": "市场监管一队",
                                                "cert_number": "ZJ-0001", "cert_expires_ms": now + 30 * day})
    await admin.ok("POST", "/api/v1/officers", {"id": "off-2", "name": "李四", "unit": "市场监管一队",
                                                "cert_number": "ZJ-0002", "cert_expires_ms": now - day})
    device = await admin.enroll(clock)
    refused = await admin.call("POST", f"/api/v1/devices/{device.device_id}/assignments", {"officer_id": "off-2"})
    assert refused.status == 422
    assert refused.code == "officer_certificate_expired"
    await admin.ok("POST", f"/api/v1/devices/{device.device_id}/assignments", {"officer_id": "off-1"}, 201)
    me = await device.request("GET", "/api/v1/device/self")
    assert me.json["assignment"]["officer_id"] == "off-1"
    device.officer_id = "off-1"
    await device.announce(device.event("start"))
    device.officer_id = "off-2"  # the entry names someone else, whose certificate has expired
    await device.deliver()
    mismatch = await findings(admin, device.device_id, "officer.mismatch")
    assert [(f["seq"], f["evidence"]["assigned_officer"]) for f in mismatch] == [(1, "off-1")]
    expired = await findings(admin, device.device_id, "officer.certificate_expired")
    assert [f["seq"] for f in expired] == [1]


async def test_device_key_rotation(server: RunningServer, admin: Api, clock: FakeClock) -> None:
    from protocol.keys import SigningKey

    device = await admin.enroll(clock)
    await device.announce(device.event("start"))
    new_key = SigningKey.generate()
    forged = device.rotation(new_key)
    # A rotation not signed by the current key is refused.
    stranger = SigningKey.generate()
    bad = device.rotation(new_key)
    bad_env = Envelope.sign(bad.payload_type, bad.payload, stranger)
    refused = await device.request("POST", "/api/v1/device/key-rotation", bad_env.raw)
    assert refused.status == 422, refused.body
    ok = await device.request("POST", "/api/v1/device/key-rotation", forged.raw)
    assert ok.status == 200, ok.body
    device.key = new_key  # the device id stays the one of its first key
    after = await device.deliver()
    assert after["state"] == "verified"
    assert after["trusted"] is True
    keys = await admin.ok("GET", f"/api/v1/devices/{device.device_id}/keys")
    assert [k["retired_after_seq"] for k in keys["keys"]] == [0, None]


async def test_server_key_rotation_keeps_old_keys(server: RunningServer, admin: Api, clock: FakeClock) -> None:
    token_before = (await admin.ok("POST", "/api/v1/enrollment-tokens", {}))["token"]
    old = server.services.keyring.current.key_id
    rotated = await admin.ok("POST", "/api/v1/server-keys/rotate")
    assert rotated["current"]["key_id"] != old
    assert [k["key_id"] for k in rotated["keys"]][1] == old
    assert rotated["keys"][1]["retired_ms"] is not None
    # A token made before the rotation pins the old key: the answer is signed by exactly that key.
    from tests.helpers.device import SimDevice

    device = SimDevice(server.url, admin.session, clock)
    answer = await device.enroll(token_before)
    assert {k.key_id for k in answer.server_keys} == {old, rotated["current"]["key_id"]}
