"""The transparency log through the API: receipts carry their leaf, proofs verify with protocol/ alone."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from custody.clock import FakeClock
from protocol.checkpoint import NoteVerifier, open_checkpoint
from protocol.envelope import Envelope
from protocol.leaves import EntryLeaf, HoldLeaf, parse_leaf, text_sha256
from protocol.merkle import leaf_hash, verify_consistency, verify_inclusion
from protocol.messages import Receipt
from server.app import RunningServer, start_server
from server.db import schema
from server.log_guard import LogRolledBack
from tests.integration.server.conftest import Api, server_config
from tests.integration.tamper.conftest import record

pytestmark = pytest.mark.integration


def b64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in items]


async def test_receipts_are_in_the_log_and_proofs_verify(log_server: RunningServer, log_admin: Api,
                                                         clock: FakeClock) -> None:
    device = await log_admin.enroll(clock)
    rec = await record(device, 3)
    await log_server.services.log.checkpoint_round()
    key = await log_admin.ok("GET", "/api/v1/log/key")
    verifier = NoteVerifier.from_vkey(key["vkey"])
    note = await log_admin.call("GET", "/api/v1/log/checkpoint", token=None)
    assert note.status == 200 and note.headers["Content-Type"].startswith("text/plain")
    cp, _ = open_checkpoint(note.body, verifier)
    for seq in rec.seqs:
        entry = (await log_admin.ok("GET", f"/api/v1/devices/{device.device_id}/entries/{seq}"))
        receipt = Receipt.peek(Envelope.from_bytes(entry["receipt"].encode()))
        assert receipt.log_index is not None and receipt.tree_size == receipt.log_index + 1
        proof = (await log_admin.call("GET", f"/api/v1/log/proof/inclusion?index={receipt.log_index}&size={cp.size}",
                                      token=None)).json
        leaf = parse_leaf(base64.b64decode(proof["leaf"]))
        assert isinstance(leaf, EntryLeaf) and (leaf.device_id, leaf.seq) == (device.device_id, seq)
        assert leaf.entry_hash == receipt.entry_hash and leaf.stored_sha256 == receipt.stored_sha256
        verify_inclusion(receipt.log_index, cp.size, leaf_hash(base64.b64decode(proof["leaf"])), b64(proof["proof"]),
                         cp.root)
        by_hash = (await log_admin.call("GET", f"/api/v1/log/proof/inclusion?hash={proof['leaf_hash']}"
                                               f"&size={cp.size}", token=None)).json
        assert by_hash["index"] == receipt.log_index
    # the tree grows; the new checkpoint is consistent with the old one
    await record(device, 1, seed=2)
    await log_server.services.log.checkpoint_round()
    cp2, _ = open_checkpoint((await log_admin.call("GET", "/api/v1/log/checkpoint", token=None)).body, verifier)
    assert cp2.size > cp.size
    cons = (await log_admin.call("GET", f"/api/v1/log/proof/consistency?from={cp.size}&to={cp2.size}",
                                 token=None)).json
    verify_consistency(cp.size, cp2.size, b64(cons["proof"]), cp.root, cp2.root)
    leaves = (await log_admin.call("GET", "/api/v1/log/leaves?start=0&end=1000", token=None)).json["leaves"]
    assert len(leaves) == cp2.size
    kinds = {x["kind"] for x in leaves}
    assert {"entry", "access", "key"} <= kinds  # duty grants are access leaves; keys are logged by the round


async def test_link_events_are_logged_with_opaque_principals(log_server: RunningServer, log_admin: Api,
                                                             clock: FakeClock) -> None:
    device = await log_admin.enroll(clock)
    rec = await record(device, 1)
    await log_admin.user("handler", "case_handler")
    case_id = (await log_admin.ok("POST", "/api/v1/cases", {"number": "L-1", "category": "penalty", "title": "t",
                                                            "handler": "handler"}))["id"]
    await log_admin.ok("POST", f"/api/v1/cases/{case_id}/steps", {"id": "st-1", "stage": "filing", "activity": "other"})
    link = await log_admin.ok("POST", f"/api/v1/cases/{case_id}/steps/st-1/links", {
        "device_id": device.device_id, "recording_id": rec.recording_id, "reason": "documents the filing"})
    await log_admin.ok("POST", f"/api/v1/cases/{case_id}/steps/st-1/links/{link['id']}/unlink", {"reason": "wrong"})
    events = (await log_admin.ok("GET", f"/api/v1/cases/{case_id}/events"))["events"]
    assert [e["action"] for e in events] == ["link", "unlink"]
    for e in events:
        assert e["log_index"] is not None
        leaf_b64 = (await log_admin.call("GET", f"/api/v1/log/leaves?start={e['log_index']}&end="
                                                f"{e['log_index'] + 1}", token=None)).json["leaves"][0]["leaf"]
        leaf = parse_leaf(base64.b64decode(leaf_b64))
        assert leaf.KIND == "link"
        assert b"admin" not in base64.b64decode(leaf_b64)  # the log names nobody: user ids only


async def test_a_legal_hold_set_and_lifted_is_two_leaves_that_verify(log_server: RunningServer, log_admin: Api,
                                                                     clock: FakeClock) -> None:
    """Held footage never expires: the lift that could release it is in the public log, as is the setting."""
    device = await log_admin.enroll(clock)
    rec = await record(device, 1)
    # A name no id or hash could contain by chance ("lr" was found inside a random device id once).
    reviewer = await log_admin.user("reviewer-wang", "legal_reviewer")
    sup = await log_admin.user("sup", "supervisor")
    held = await reviewer.ok("POST", "/api/v1/holds", {"target": "recording", "device_id": device.device_id,
                                                      "recording_id": rec.recording_id,
                                                      "reason": "行政复议申请 / appeal filed"}, 201)
    clock.advance(60)
    lifted = await sup.ok("POST", f"/api/v1/holds/{held['id']}/lift", {"reason": "复议决定已生效 / decided"})
    assert held["set_log_index"] is not None and lifted["set_log_index"] == held["set_log_index"]
    assert lifted["lift_log_index"] is not None and lifted["lift_log_index"] > held["set_log_index"]
    listed = next(h for h in (await log_admin.ok("GET", "/api/v1/holds"))["holds"] if h["id"] == held["id"])
    assert (listed["set_log_index"], listed["lift_log_index"]) == (held["set_log_index"], lifted["lift_log_index"])

    await log_server.services.log.checkpoint_round()
    verifier = NoteVerifier.from_vkey((await log_admin.ok("GET", "/api/v1/log/key"))["vkey"])
    cp, _ = open_checkpoint((await log_admin.call("GET", "/api/v1/log/checkpoint", token=None)).body, verifier)
    leaves: list[HoldLeaf] = []
    for index in (lifted["set_log_index"], lifted["lift_log_index"]):
        proof = (await log_admin.call("GET", f"/api/v1/log/proof/inclusion?index={index}&size={cp.size}",
                                      token=None)).json
        data = base64.b64decode(proof["leaf"])
        verify_inclusion(index, cp.size, leaf_hash(data), b64(proof["proof"]), cp.root)
        leaf = parse_leaf(data)
        assert isinstance(leaf, HoldLeaf)
        assert b"appeal" not in data and b"decided" not in data and b"reviewer-wang" not in data  # hashes, ids
        leaves.append(leaf)
    set_leaf, lift_leaf = leaves
    # Both ends name the same hold and target; each carries its own person, role, reason hash and time.
    for leaf in leaves:
        assert (leaf.hold_id, leaf.target, leaf.device_id, leaf.recording_id, leaf.case_id) == (
            held["id"], "recording", device.device_id, rec.recording_id, None)
    assert (set_leaf.action, set_leaf.role, set_leaf.reason_sha256, set_leaf.time_ms) == (
        "set", "legal_reviewer", text_sha256(held["reason"]), held["set_ms"])
    assert (lift_leaf.action, lift_leaf.role, lift_leaf.reason_sha256, lift_leaf.time_ms) == (
        "lift", "supervisor", text_sha256(lifted["lift_reason"]), lifted["lifted_ms"])
    async with log_server.services.db.read() as conn:
        users = {r.name: r.id for r in (await conn.execute(sa.select(schema.users.c.name, schema.users.c.id))).all()}
    assert (set_leaf.principal, lift_leaf.principal) == (f"user:{users['reviewer-wang']}", f"user:{users['sup']}")

    # A case hold names the case, and lifting twice leaves no second lift leaf.
    await log_admin.user("ch", "case_handler")
    case_id = (await log_admin.ok("POST", "/api/v1/cases", {"number": "H-1", "category": "penalty", "title": "t",
                                                              "handler": "ch"}))["id"]
    case_hold = await log_admin.ok("POST", "/api/v1/holds", {"target": "case", "case_id": case_id,
                                                            "reason": "complaint"}, 201)
    size = await log_server.services.log.size()
    leaf = parse_leaf(base64.b64decode((await log_admin.call(
        "GET", f"/api/v1/log/leaves?start={case_hold['set_log_index']}&end={size}", token=None)).json["leaves"][0][
        "leaf"]))
    assert isinstance(leaf, HoldLeaf) and (leaf.target, leaf.case_id, leaf.device_id) == ("case", str(case_id), None)
    again = await sup.call("POST", f"/api/v1/holds/{held['id']}/lift", {"reason": "once more"})
    assert (again.status, again.code) == (409, "hold_lifted")
    assert await log_server.services.log.size() == size


async def test_new_checkpoints_go_to_every_publisher(log_server: RunningServer, log_admin: Api,
                                                     clock: FakeClock) -> None:
    from server.app import MQTT

    assert log_server.app[MQTT].publish_checkpoint in log_server.services.log._publishers  # the retained topic
    published: list[bytes] = []

    async def publisher(note: bytes) -> None:
        published.append(note)

    log_server.services.log.add_publisher(publisher)
    device = await log_admin.enroll(clock)
    await record(device, 1)
    note = await log_server.services.log.checkpoint_round()
    assert note is not None and published == [note]
    assert await log_server.services.log.checkpoint_round() is None  # the tree did not grow: nothing new
    assert published == [note]


async def test_a_rolled_back_log_does_not_start(tmp_path: Path, clock: FakeClock,
                                                session: aiohttp.ClientSession) -> None:
    """An old database snapshot behind the published checkpoint is refused at start (server/log_guard.py)."""
    data = tmp_path / "data"
    quiet: dict[str, Any] = {"scrub.enabled": False}
    cfg = server_config(data, **quiet)

    async def one_recording(seed: int) -> None:
        srv = await start_server(cfg, clock)
        try:
            admin = Api(srv.url, session, srv.services.datadir.admin_token.read_text().strip())
            await record(await admin.enroll(clock), 1, seed=seed)
            assert await srv.services.log.checkpoint_round() is not None
        finally:
            await srv.stop()

    await one_recording(1)
    published = (data / "published-checkpoint").read_text()
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    for f in data.glob("custody.sqlite3*"):
        shutil.copy(f, snapshot / f.name)
    await one_recording(2)
    assert (data / "published-checkpoint").read_text() != published  # the file follows every checkpoint
    for f in data.glob("custody.sqlite3*"):
        f.unlink()
    for f in snapshot.iterdir():
        shutil.copy(f, data / f.name)
    with pytest.raises(LogRolledBack, match="was already published"):
        await start_server(cfg, clock)
