"""A chunk delivered in one request with its signed manifest (``PUT /api/v1/chunks/{device}/{seq}``).

The local store takes a chunk's bytes together with its manifest: the manifest, signed by the
device key and naming the body's SHA-256 and size, is the credential, so one request announces,
stores and verifies, and answers the receipt. These tests hold that to the same rules as the
announce-then-upload path: refused with nothing stored when the manifest does not authenticate the
body, idempotent when sent again, a conflict kept aside, and an S3 server sending the device back
to announcing.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import hashlib
import json
from typing import Any

import pytest
import sqlalchemy as sa

from custody.clock import FakeClock
from protocol.canonical import b64e
from protocol.envelope import Envelope
from protocol.keys import SigningKey
from protocol.messages import ChunkManifest
from server.app import RunningServer
from server.db.schema import conflicts, devices
from tests.helpers.device import SimDevice
from tests.helpers.media import Chunk, make_chunk
from tests.integration.server.conftest import Api
from tests.integration.server.test_ingest import findings, open_receipt

pytestmark = pytest.mark.integration


async def stored_count(server: RunningServer) -> int:
    """Chunk files in the local footage directory."""
    root = server.services.config.data_dir / "footage"
    return sum(1 for p in root.rglob("*") if p.is_file())


async def test_one_request_announces_stores_and_receipts(server: RunningServer, admin: Api,
                                                         clock: FakeClock) -> None:
    device = await admin.enroll(clock)
    start = await device.announce(device.event("start"))
    # The announce answer tells the device that this server takes chunks directly.
    assert start.json["direct_upload"] is True
    chunk = make_chunk()
    env = device.manifest(chunk)
    reply = await device.put_chunk(env, chunk.data)
    assert reply.status == 201, reply.body
    assert reply.json["state"] == "verified"
    assert [s["status"] for s in reply.json["verification"] if "number" in s][:4] == ["pass"] * 4
    receipt = open_receipt(reply.json["receipt"], server)
    assert (receipt.seq, receipt.entry_hash) == (1, env.hash.hex())
    assert receipt.stored_sha256 == hashlib.sha256(chunk.data).hexdigest()
    listed = (await admin.ok("GET", f"/api/v1/devices/{device.device_id}/entries?from_seq=1"))["entries"]
    assert [(e["seq"], e["source"], e["state"]) for e in listed] == [(1, "http", "verified")]

    # Sent again (the answer was lost): the same receipt, nothing written twice.
    again = await device.put_chunk(env, chunk.data)
    assert again.status == 200, again.body
    assert again.json["receipt"] == reply.json["receipt"]
    assert again.json["stored"] is False
    # And the announce path agrees.
    assert (await device.announce(env)).json["receipt"] == reply.json["receipt"]


async def test_an_entry_announced_first_is_not_announced_again(server: RunningServer, admin: Api,
                                                               clock: FakeClock) -> None:
    device = await admin.enroll(clock)
    await device.announce(device.event("start"))
    chunk = make_chunk()
    env = device.manifest(chunk)
    assert (await device.announce(env)).status == 201  # as its MQTT copy would be
    reply = await device.put_chunk(env, chunk.data)
    assert reply.status == 201, reply.body
    open_receipt(reply.json["receipt"], server)
    listed = (await admin.ok("GET", f"/api/v1/devices/{device.device_id}/entries?from_seq=1"))["entries"]
    assert [(e["seq"], e["source"], e["state"]) for e in listed] == [(1, "http", "verified")]


async def test_bad_deliveries_are_refused_with_nothing_stored(server: RunningServer, admin: Api,
                                                              clock: FakeClock) -> None:
    device = await admin.enroll(clock)
    await device.announce(device.event("start"))
    chunk = make_chunk()
    env = device.manifest(chunk, advance=False)
    other = make_chunk(seed=3)
    stranger = SigningKey.generate()
    forged = device.manifest(chunk, key=stranger, advance=False)
    event = device.event("stop", advance=False)
    cases = [
        ("body is not the manifest's", device.put_chunk(env, other.data[:len(chunk.data)].ljust(len(chunk.data), b"x")),
         400, "content_hash_mismatch"),
        ("body of another size", device.put_chunk(env, chunk.data + b"x"), 400, "size_mismatch"),
        ("manifest for another seq", device.put_chunk(env, chunk.data, seq=7), 400, "entry_path_mismatch"),
        ("manifest for another device", device.put_chunk(env, chunk.data, device_id="a" * 24), 400,
         "entry_path_mismatch"),
        ("no manifest", device.raw("PUT", f"{device.base_url}/api/v1/chunks/{device.device_id}/1", chunk.data),
         401, "missing_entry"),
        ("manifest not base64url", device.put_chunk(env, chunk.data, entry="not base64!"), 400, "bad_entry_header"),
        ("manifest not an envelope", device.put_chunk(env, chunk.data, entry=b64e(b'{"a": 1}')), 400, None),
        ("manifest signed by another key", device.put_chunk(forged, chunk.data), 401, "unknown_key"),
        ("a recording event", device.put_chunk(env, b"", entry=b64e(event.raw)), 400, "not_a_chunk"),
    ]
    for name, request, status, code in cases:
        reply = await request
        assert reply.status == status, (name, reply.body)
        if code is not None:
            assert reply.code == code, (name, reply.body)
        assert reply.headers["Content-Type"].startswith("application/problem+json"), name
    assert await stored_count(server) == 0
    entries = await admin.ok("GET", f"/api/v1/devices/{device.device_id}/entries")
    # The mismatched bodies were refused before their genuine manifest was recorded: nothing of seq 1.
    assert [(e["seq"], e["state"]) for e in entries["entries"]] == [(0, "verified")]
    # The genuine pair still goes through.
    reply = await device.put_chunk(env, chunk.data)
    assert reply.status == 201, reply.body
    assert reply.json["state"] == "verified"


async def test_a_different_manifest_for_a_used_seq_is_a_conflict(server: RunningServer, admin: Api,
                                                                 clock: FakeClock) -> None:
    device = await admin.enroll(clock)
    await device.announce(device.event("start"))
    original = make_chunk()
    first = await device.put_chunk(device.manifest(original), original.data)
    assert first.status == 201, first.body
    other = make_chunk(seed=9)
    rival = device.manifest(other, seq=1, prev=device.prev, advance=False)
    reply = await device.put_chunk(rival, other.data)
    assert reply.status == 409, reply.body
    assert reply.code == "chunk_conflict"
    entry = await admin.ok("GET", f"/api/v1/devices/{device.device_id}/entries/1")
    assert entry["receipt"] == first.json["receipt"]
    assert len(await findings(admin, device.device_id, "chunk.conflict")) == 1
    # The rival body came with the request: it is kept aside as the conflict's evidence, and the
    # original is untouched.
    grant = server.services.ingest.read_grant
    assert grant is not None
    rival_sha = hashlib.sha256(other.data).hexdigest()
    kept = await server.services.store.get(f"conflicts/{device.device_id}/000000000001/{rival_sha}", grant)
    assert kept is not None and kept.data == other.data
    original_key = f"{device.device_id}/000000000001/{hashlib.sha256(original.data).hexdigest()}"
    stored = await server.services.store.get(original_key, grant)
    assert stored is not None and stored.data == original.data
    async with server.services.db.read() as conn:
        evidence = (await conn.execute(sa.select(conflicts.c.evidence_key))).scalars().all()
    assert evidence == [f"conflicts/{device.device_id}/000000000001/{rival_sha}"]


async def test_an_s3_server_sends_the_device_back_to_announcing(any_server: RunningServer, any_admin: Api,
                                                                clock: FakeClock) -> None:
    device = await any_admin.enroll(clock)
    start = await device.announce(device.event("start"))
    chunk = make_chunk()
    reply = await device.put_chunk(device.manifest(chunk), chunk.data)
    if any_server.services.store.kind == "s3":
        assert start.json["direct_upload"] is False
        assert (reply.status, reply.code) == (400, "wrong_store")
    else:
        assert start.json["direct_upload"] is True
        assert reply.status == 201, reply.body


async def test_concurrent_chunks_are_concluded_in_groups(any_server: RunningServer, any_admin: Api,
                                                         clock: FakeClock) -> None:
    """Chunks arriving together share a transaction and a log append; each keeps its own outcome."""
    devices = [await any_admin.enroll(clock) for _ in range(4)]
    for device in devices:
        await device.announce(device.event("start"))
    sent = []  # (device, manifest, chunk) for five chunks a device
    for i in range(5):
        for device in devices:
            chunk = make_chunk(seed=i)
            if device is devices[0] and i == 2:  # the manifest claims 5 s more than the media holds
                chunk = dataclasses.replace(chunk, duration_ms=chunk.duration_ms + 5_000)
            sent.append((device, device.manifest(chunk), chunk))
    ingest = any_server.services.ingest

    async def deliver(device: SimDevice, env: Envelope, chunk: Chunk) -> dict[str, Any]:
        if any_server.services.store.direct_upload:
            reply = await device.put_chunk(env, chunk.data)
        else:
            announced = await device.announce(env)
            reply = await device.put(announced.json["upload"], chunk.data)
            assert reply.status == 200, reply.body  # S3 answers its own XML; verify for the receipt
            reply = await device.verify(ChunkManifest.peek(env).seq)
            if reply.status == 422:
                return {"state": "rejected", "code": reply.code}
        assert reply.status in (200, 201), reply.body
        answer: dict[str, Any] = reply.json
        return answer

    groups_before = collections.Counter(ingest.group_sizes)
    # Every chunk, and seq 1 of the second device twice at once (a retry racing its original).
    answers = await asyncio.gather(*(deliver(*s) for s in sent), deliver(*sent[1]))
    rejected = [a for a in answers if a["state"] == "rejected"]
    assert len(rejected) == 1
    receipts = [open_receipt(a["receipt"], any_server) for a in answers if a["state"] == "verified"]
    assert len(receipts) == len(sent)  # 19 chunks and the repeat
    assert answers[-1]["receipt"] == answers[1]["receipt"]
    indexes = sorted({r.log_index for r in receipts if r.log_index is not None})
    assert len(indexes) == len(sent) - 1  # every accepted entry once, the repeat at its original's
    for r in receipts:
        assert r.log_index is not None and r.tree_size == r.log_index + 1
    # The log holds each accepted entry once, at the index its receipt names.
    leaves = (await any_admin.ok("GET", f"/api/v1/log/leaves?start={indexes[0]}&end={indexes[-1] + 1}"))["leaves"]
    by_index = {leaf["index"]: json.loads(base64.b64decode(leaf["leaf"])) for leaf in leaves}
    for r in receipts:
        logged = by_index[r.log_index]
        assert (logged["leaf"], logged["device_id"], logged["seq"], logged["entry_hash"]) == (
            "entry", r.device_id, r.seq, r.entry_hash)
    assert await findings(any_admin, devices[0].device_id, "chunk.verification_failed")
    # At least once, several conclusions shared one transaction.
    grouped = collections.Counter(ingest.group_sizes) - groups_before
    assert max(grouped) > 1, grouped


@pytest.mark.parametrize("via", ["deliver", "announce"])
async def test_chunks_recorded_together_get_every_check(local_server: RunningServer, local_admin: Api,
                                                        clock: FakeClock, via: str) -> None:
    """New chunks recorded in one group transaction, delivered with their bytes or announced first
    (as their MQTT copies are), are checked as if they came one by one: gaps, links, officers, trust."""
    admin, day = local_admin, 86_400_000
    now = clock.now_ms()
    await admin.ok("POST", "/api/v1/officers", {"id": "off-1", "name": "张三", "unit": "一队",
                                                "cert_number": "ZJ-0001", "cert_expires_ms": now + 30 * day})
    await admin.ok("POST", "/api/v1/officers", {"id": "off-2", "name": "李四", "unit": "一队",
                                                "cert_number": "ZJ-0002", "cert_expires_ms": now - day})
    device = await admin.enroll(clock)
    await admin.ok("POST", f"/api/v1/devices/{device.device_id}/assignments", {"officer_id": "off-1"}, 201)
    device.officer_id = "off-1"
    await device.announce(device.event("start"))
    chunks = {seq: make_chunk(seed=seq) for seq in range(1, 6)}
    m1 = device.manifest(chunks[1], officer_id="off-2")  # someone else, whose certificate has expired
    m2 = device.manifest(chunks[2])
    m3 = device.manifest(chunks[3])
    m4 = device.manifest(chunks[4], prev="ab" * 32)  # does not follow seq 3
    # seq 3 first: a gap (1..2) that is a finding, not a refusal; its link is provisional.
    r3 = await device.put_chunk(m3, chunks[3].data)
    assert r3.status == 201, r3.body
    assert [s["status"] for s in r3.json["verification"] if "number" in s][2] == "provisional"
    gaps = await findings(admin, device.device_id, "chain.gap", open_only=True)
    assert [(g["evidence"]["first"], g["evidence"]["last"]) for g in gaps] == [(1, 2)]
    # The rest at once, seq 1 twice (a retry racing its original). The device row is held locked
    # until every one waits for a group, so that they meet: a group of one, then one of the others.
    ingest = local_server.services.ingest
    groups_before = collections.Counter(ingest.group_sizes)
    db = local_server.services.db
    later = [(m4, chunks[4]), (m2, chunks[2]), (m1, chunks[1]), (m1, chunks[1])]
    async with db.write() as conn:
        await conn.execute(db.lock_device(sa.select(devices.c.id).where(devices.c.id == device.device_id)))
        if via == "deliver":
            sending = asyncio.gather(*(device.put_chunk(m, c.data) for m, c in later))
        else:
            sending = asyncio.gather(*(device.announce(m) for m, _ in later))
        for _ in range(200):
            if len(ingest._pending) >= 2:  # besides the one the committer holds
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
    replies = await sending
    if via == "announce":
        for reply in replies:
            assert reply.status in (200, 201), reply.body
            assert reply.json["state"] == "announced"
        replies = [await device.put_chunk(m, c.data) for m, c in later]
    for reply in replies:
        assert reply.status in (200, 201), reply.body
        assert reply.json["state"] == "verified"
    assert replies[2].json["receipt"] == replies[3].json["receipt"]
    grouped = collections.Counter(local_server.services.ingest.group_sizes) - groups_before
    assert max(grouped) > 1, grouped
    assert await findings(admin, device.device_id, "chain.gap", open_only=True) == []
    mismatched = await findings(admin, device.device_id, "chain.prev_mismatch")
    assert [f["seq"] for f in mismatched] == [4]
    officer = await findings(admin, device.device_id, "officer.mismatch")
    assert [(f["seq"], f["evidence"]["assigned_officer"]) for f in officer] == [(1, "off-1")]
    assert [f["seq"] for f in await findings(admin, device.device_id, "officer.certificate_expired")] == [1]
    # A lost device's chunk: stored, verified, receipted and untrusted.
    await admin.ok("POST", f"/api/v1/devices/{device.device_id}/state", {"state": "lost", "reason": "stolen"})
    m5 = device.manifest(chunks[5])
    r5 = await device.put_chunk(m5, chunks[5].data)
    assert r5.status == 201, r5.body
    assert (r5.json["state"], r5.json["trusted"]) == ("verified", False)
    assert [f["seq"] for f in await findings(admin, device.device_id, "entry.untrusted")] == [5]
    listed = (await admin.ok("GET", f"/api/v1/devices/{device.device_id}/entries?from_seq=1"))["entries"]
    assert [(e["seq"], e["state"], e["trusted"]) for e in listed] == [
        (1, "verified", True), (2, "verified", True), (3, "verified", True), (4, "verified", True),
        (5, "verified", False)]
    receipts = [open_receipt(r.json["receipt"], local_server) for r in (r3, *replies[:3], r5)]
    assert sorted(r.seq for r in receipts) == [1, 2, 3, 4, 5]
    assert len({r.log_index for r in receipts}) == 5
    me = await device.request("GET", "/api/v1/device/self")
    assert me.status == 200, me.body
    status = await admin.ok("GET", f"/api/v1/devices/{device.device_id}")
    assert (status["highest_seq"], status["receipted_seq"]) == (5, 5)


async def test_a_body_shorter_than_declared_is_refused(server: RunningServer, admin: Api, clock: FakeClock,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A connection that ends before the declared Content-Length gets 400 ``incomplete_body``; nothing is stored."""
    device = await admin.enroll(clock)
    await device.announce(device.event("start"))
    chunk = make_chunk()
    env = device.manifest(chunk)
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (f"PUT /api/v1/chunks/{device.device_id}/1 HTTP/1.1\r\nHost: {host}\r\n"
            f"Custody-Entry: {b64e(env.raw)}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(chunk.data)}\r\n\r\n")
    writer.write(head.encode() + chunk.data[:1000])
    await writer.drain()
    writer.write_eof()  # the device's connection ends mid-body
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    if answer:  # the answer may not reach a connection that is gone; when it does, it is the 400
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1] == b"400", answer[:300]
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["code"] == "incomplete_body"
    assert await stored_count(server) == 0
    # Not an internal error: the server keeps serving, and the whole chunk goes through.
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    reply = await device.put_chunk(env, chunk.data)
    assert reply.status == 201, reply.body
