"""MQTT ingest against a real Mosquitto (MQTT 5, shared subscriptions) and the real server.

Entries over MQTT alone are announced; the receipt of a chunk verified over HTTP also arrives over
MQTT; duplicated and reordered delivery is harmless; a signed status ahead of the entries opens a
provisional gap that closes itself; forged, garbage and wrong-device messages are refused, counted
and logged while the server carries on; a broker restarted without persistence is resubscribed.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from custody.clock import FakeClock
from protocol.canonical import b64e, canonical_bytes
from protocol.envelope import Envelope
from protocol.keys import SigningKey, VerifyKey
from protocol.messages import CheckpointRef, Receipt
from protocol.topics import DeviceTopic, device_topic
from server.app import RunningServer, start_server
from server.mqtt.handlers import RECEIPT_RESEND_AFTER_MS
from tests.helpers.device import SimDevice
from tests.helpers.device_mqtt import DeviceMqtt, entry_hash, eventually, status_of, wait_for
from tests.helpers.media import make_chunk
from tests.integration.server.conftest import Api, server_config
from tests.services.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def open_receipt(raw: bytes, server: RunningServer) -> Receipt:
    """Check a receipt with the server's published key, as a device does."""
    key = server.services.keyring.history[0]
    return Receipt.open(Envelope.from_bytes(raw), VerifyKey(key.alg, key.public_key))


async def entries_of(api: Api, device_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await api.ok("GET", f"/api/v1/devices/{device_id}/entries"))["entries"]
    return found


async def findings_of(api: Api, device_id: str, code: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await api.ok("GET", f"/api/v1/findings?device_id={device_id}&code={code}"))[
        "findings"]
    return found


async def test_entries_over_mqtt_only_and_receipts_both_ways(mq_server: RunningServer, mq_admin: Api,
                                                             clock: FakeClock, mosquitto: MosquittoBroker) -> None:
    link = mq_server.mqtt.link
    assert link is not None and link.stats.protocol == "5" and link.stats.shared
    assert link.stats.subscriptions[0] == "$share/custody-ingest/custody/v1/devices/+/entry"
    device = await mq_admin.enroll(clock)
    assert device.answer is not None
    assert device.answer.mqtt_url == mosquitto.url
    assert device.answer.mqtt_username == device.device_id and device.answer.mqtt_password
    async with DeviceMqtt(device, mosquitto.url) as m:
        start = device.event("start")
        await m.entry(start)
        # A recording event is receipted at once; the receipt comes back over MQTT with no HTTP at all.
        await wait_for(lambda: len(m.received["receipt"]) == 1, what="event receipt over MQTT")
        r0 = open_receipt(m.received["receipt"][0], mq_server)
        assert (r0.seq, r0.entry_hash) == (0, entry_hash(start))

        chunk = make_chunk()
        manifest = device.manifest(chunk)
        await m.entry(manifest)
        rows = await eventually(lambda: _entry(mq_admin, device.device_id, 1), what="chunk announced over MQTT")
        assert (rows["state"], rows["source"]) == ("announced", "mqtt")

        # The bytes go over HTTP: the device asks for its (fresh) upload target, PUTs, verifies.
        state = await device.request("GET", "/api/v1/device/entries/1")
        assert state.status == 200 and state.json["state"] == "announced"
        put = await device.put(state.json["upload"], chunk.data)
        assert put.status == 201, put.body
        verified = await device.verify(1)
        assert verified.status == 200, verified.body
        http_receipt = verified.json["receipt"].encode("ascii")
        await wait_for(lambda: len(m.received["receipt"]) == 2, what="chunk receipt over MQTT")
        assert m.received["receipt"][1] == http_receipt  # the same signed bytes by both paths
        assert open_receipt(http_receipt, mq_server).entry_hash == entry_hash(manifest)

        # A copy arriving just after the receipt is the entry's own late MQTT copy: answered, but
        # the receipt (sent over both paths already) is not sent a third time.
        await m.entry(manifest)
        await wait_for(lambda: mq_server.mqtt.stats()["accepted"]["entry"] == 3, what="late copy handled")
        # ... recognised by its hash, without parsing it or asking the database.
        assert mq_server.mqtt.stats()["entry_repeats"] == 1
        await asyncio.sleep(0.3)
        assert len(m.received["receipt"]) == 2
        # Announced again a while later (say the device missed the receipt): the receipt is sent again.
        clock.advance(RECEIPT_RESEND_AFTER_MS / 1000)
        await m.entry(manifest)
        await wait_for(lambda: len(m.received["receipt"]) == 3, what="receipt re-sent")
        assert m.received["receipt"][2] == http_receipt
    assert mq_server.mqtt.stats()["accepted"]["entry"] == 4
    assert mq_server.mqtt.stats()["refused_total"] == 0


async def _entry(api: Api, device_id: str, seq: int) -> dict[str, Any] | None:
    for row in await entries_of(api, device_id):
        if row["seq"] == seq:
            return row
    return None


async def test_duplicated_and_out_of_order_entries_are_harmless(mq_server: RunningServer, mq_admin: Api,
                                                                clock: FakeClock, mosquitto: MosquittoBroker) -> None:
    device = await mq_admin.enroll(clock)
    chain = [device.event("start"), *(device.manifest(make_chunk()) for _ in range(4)), device.event("stop")]
    order = [3, 1, 1, 5, 0, 2, 0, 4, 3, 5, 2]
    async with DeviceMqtt(device, mosquitto.url) as m:
        for i in order:
            await m.entry(chain[i])
        rows = await eventually(lambda: _all(mq_admin, device.device_id, len(chain)), what="all entries")
    assert [r["seq"] for r in rows] == list(range(len(chain)))
    assert [r["entry_hash"] for r in rows] == [entry_hash(e) for e in chain]
    assert all(r["source"] == "mqtt" for r in rows)
    # Reordering opened gaps on the way; every one closed itself. Nothing looks like tampering.
    gaps = await findings_of(mq_admin, device.device_id, "chain.gap")
    assert gaps and all(g["closed_ms"] is not None for g in gaps)
    for code in ("chain.prev_mismatch", "chain.fork", "chain.seq_reuse", "chunk.conflict"):
        assert await findings_of(mq_admin, device.device_id, code) == [], code
    stats = mq_server.mqtt.stats()
    assert stats["accepted"]["entry"] == len(order) and stats["refused_total"] == 0


async def _all(api: Api, device_id: str, n: int) -> list[dict[str, Any]] | None:
    rows = await entries_of(api, device_id)
    return rows if len(rows) == n else None


async def test_status_ahead_of_entries_is_a_gap_that_closes_itself(mq_server: RunningServer, mq_admin: Api,
                                                                    clock: FakeClock,
                                                                    mosquitto: MosquittoBroker) -> None:
    device = await mq_admin.enroll(clock)
    chain = [device.event("start"), *(device.manifest(make_chunk()) for _ in range(3))]
    async with DeviceMqtt(device, mosquitto.url) as m:
        await m.online()
        await m.entry(chain[0])
        await eventually(lambda: _entry(mq_admin, device.device_id, 0), what="seq 0")
        # The device says (signed) it committed up to seq 3; the server has only seq 0. Its clock is
        # 7 s behind the server's.
        checkpoint = CheckpointRef(origin="custody.example/log", size=12, root="ab" * 32)
        await m.send_status(status_of(device, time_ms=clock.now_ms() - 7000, checkpoint=checkpoint,
                                      buffered_chunks=3, buffered_bytes=3 * 200_000))
        gaps = await eventually(lambda: _open(mq_admin, device.device_id, "chain.gap"), what="provisional gap")
        assert [(g["evidence"]["first"], g["evidence"]["last"]) for g in gaps] == [(1, 3)]
        view = (await mq_admin.ok("GET", f"/api/v1/devices/{device.device_id}"))["fleet"]
        assert view["reported_seq"] == 3 and view["reported_head"] == entry_hash(chain[3])
        assert view["missing_entries"] == 3
        assert view["clock_skew_ms"] == 7000
        assert view["online"] is True
        assert view["recording"]["state"] == "recording"
        assert view["buffered"] == {"chunks": 3, "bytes": 600_000}
        assert view["firmware"] == "1.2.3" and view["config_version"] == "cfg-7"
        assert view["last_checkpoint"] == {"origin": "custody.example/log", "size": 12, "root": "ab" * 32}
        assert (await _open(mq_admin, device.device_id, "device.clock_skew"))[0]["evidence"]["clock_skew_ms"] == 7000

        # The entries arrive, out of order: the gap splits, then closes for good.
        for i in (2, 3, 1):
            await m.entry(chain[i])
        await eventually(lambda: _all(mq_admin, device.device_id, 4), what="entries")
        assert await _open(mq_admin, device.device_id, "chain.gap") == []
        gaps = await findings_of(mq_admin, device.device_id, "chain.gap")
        assert gaps and all(g["closed_ms"] is not None for g in gaps)

        # Announced but not uploaded: the fleet view says so, with the age of the oldest.
        clock.advance(30)
        fleet = await mq_admin.ok("GET", "/api/v1/fleet")
        mine = next(d for d in fleet["devices"] if d["device_id"] == device.device_id)
        assert mine["pending"]["chunks"] == 3 and mine["pending"]["oldest_age_ms"] >= 30_000
        assert mine["missing_entries"] == 0
        assert fleet["mqtt"]["connected"] and fleet["mqtt"]["protocol"] == "5"

        # A replayed (older) status changes nothing; a status back in tolerance closes the skew finding.
        await m.send_status(status_of(device, time_ms=clock.now_ms(), last_seq=3, head=entry_hash(chain[3])))
        await eventually(lambda: _closed_all(mq_admin, device.device_id, "device.clock_skew"), what="skew closed")
        await m.send_status(status_of(device, time_ms=clock.now_ms() - 60_000, battery_pct=5))
        await eventually(lambda: _accepted(mq_server, "status", 3), what="third status handled")
        view = (await mq_admin.ok("GET", f"/api/v1/devices/{device.device_id}"))["fleet"]
        assert view["battery_pct"] == 80


async def _open(api: Api, device_id: str, code: str) -> list[dict[str, Any]]:
    return [f for f in await findings_of(api, device_id, code) if f["closed_ms"] is None]


async def _closed_all(api: Api, device_id: str, code: str) -> bool:
    found = await findings_of(api, device_id, code)
    return bool(found) and all(f["closed_ms"] is not None for f in found)


async def _accepted(server: RunningServer, kind: str, n: int) -> bool:
    return bool(server.mqtt.stats()["accepted"].get(kind, 0) >= n)


async def test_forged_garbage_and_wrong_device_messages_are_refused(
        mq_server: RunningServer, mq_admin: Api, clock: FakeClock, mosquitto: MosquittoBroker,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="server.mqtt.handlers")
    a = await mq_admin.enroll(clock)
    b = await mq_admin.enroll(clock)
    stranger = SimDevice(mq_server.url, a.session, clock)  # never enrolled
    thief_key = SigningKey.generate()
    bad: list[tuple[str, bytes, str]] = [
        (device_topic(a.device_id, DeviceTopic.ENTRY), b"\x00garbage", "entry:bad_encoding"),
        (device_topic(a.device_id, DeviceTopic.ENTRY), b'{"not": "an envelope"}', "entry:not_canonical"),
        # A's entry signed by someone else's key, and A's entry with its signature altered: forged.
        (device_topic(a.device_id, DeviceTopic.ENTRY), _resign(a.event("start", advance=False), thief_key),
         "entry:unknown_key"),
        (device_topic(a.device_id, DeviceTopic.ENTRY), _tampered(a.event("start", advance=False)),
         "entry:bad_signature"),
        # B's genuine entry on A's topic.
        (device_topic(a.device_id, DeviceTopic.ENTRY), b.event("start", advance=False).raw, "entry:wrong_device"),
        # A device nobody enrolled.
        (device_topic(stranger.device_id, DeviceTopic.ENTRY), stranger.event("start", advance=False).raw,
         "entry:unknown_device"),
        # A status of A signed by B's key, and B's status on A's topic.
        (device_topic(a.device_id, DeviceTopic.STATUS), _status_signed_by(a, b.key, clock), "status:unknown_key"),
        (device_topic(a.device_id, DeviceTopic.STATUS), status_of(b, time_ms=clock.now_ms()).raw,
         "status:wrong_device"),
        (device_topic(a.device_id, DeviceTopic.STATUS), b"{}", "status:missing_field"),
        (device_topic(a.device_id, DeviceTopic.ACK), b"nope", "ack:bad_encoding"),
        (device_topic(a.device_id, DeviceTopic.AVAILABILITY), b"maybe", "availability:bad_availability"),
        ("custody/v1/devices/NOT-A-DEVICE/entry", b"x", "topic:unknown_topic"),
    ]
    async with DeviceMqtt(a, mosquitto.url, subscribe=False) as m:
        for topic, payload, _ in bad:
            await m.publish(topic, payload)
        await wait_for(lambda: mq_server.mqtt.stats()["refused_total"] == len(bad), what="all refused")
        refused = mq_server.mqtt.stats()["refused"]
        for _, _, reason in bad:
            assert any(k.startswith(reason) for k in refused), (reason, refused)
        # Nothing was stored for either device, nor for the stranger.
        assert await entries_of(mq_admin, a.device_id) == []
        assert await entries_of(mq_admin, b.device_id) == []
        view = (await mq_admin.ok("GET", f"/api/v1/devices/{a.device_id}"))["fleet"]
        assert view["status_time_ms"] is None and view["online"] is None
        # Each refusal is in the log with its reason.
        logged = [r.getMessage() for r in caplog.records if "refused MQTT message" in r.getMessage()]
        assert len(logged) == len(bad)
        assert any("wrong_device" in line for line in logged)

        # The server carries on: a genuine entry right after is accepted.
        await m.entry(a.event("start"))
        await eventually(lambda: _entry(mq_admin, a.device_id, 0), what="genuine entry accepted")
    assert mq_server.mqtt.stats()["errors"] == {}


def _resign(env: Envelope, key: SigningKey) -> bytes:
    return Envelope.sign(env.payload_type, env.payload, key).raw


def _tampered(env: Envelope) -> bytes:
    """The same envelope with one bit of its signature flipped (still well-formed)."""
    sig = bytearray(env.signature)
    sig[0] ^= 1
    return canonical_bytes({"alg": env.alg, "kid": env.key_id, "payload": b64e(env.payload), "sig": b64e(bytes(sig)),
                            "type": env.payload_type})


def _status_signed_by(device: SimDevice, key: SigningKey, clock: FakeClock) -> bytes:
    env = status_of(device, time_ms=clock.now_ms())
    return _resign(env, key)


async def test_broker_restart_without_persistence_resubscribes(mq_server: RunningServer, mq_admin: Api,
                                                               clock: FakeClock, mosquitto: MosquittoBroker) -> None:
    link = mq_server.mqtt.link
    assert link is not None
    device = await mq_admin.enroll(clock)
    async with DeviceMqtt(device, mosquitto.url) as m:
        await m.entry(device.event("start"))
        await eventually(lambda: _entry(mq_admin, device.device_id, 0), what="seq 0")
    # The broker forgets everything (persistence is off): sessions, subscriptions, retained messages.
    mosquitto.restart()
    await wait_for(lambda: link.stats.connects >= 2 and link.connected.is_set(), limit=20, what="link back")
    async with DeviceMqtt(device, mosquitto.url) as m:
        await m.entry(device.manifest(make_chunk()))
        row = await eventually(lambda: _entry(mq_admin, device.device_id, 1), what="seq 1 after the restart")
        assert row["source"] == "mqtt"
        # Receipts flow again too (the server's publishing side reconnected with it).
        await m.entry(device.event("stop"))
        await wait_for(lambda: len(m.received["receipt"]) == 1, what="receipt after the restart")


async def test_two_server_processes_split_ingest_with_shared_subscriptions(
        tmp_path: Path, clock: FakeClock, mosquitto: MosquittoBroker, session: aiohttp.ClientSession,
        request: pytest.FixtureRequest) -> None:
    """Two servers on one PostgreSQL database: each entry is handled by exactly one of them."""
    overrides: dict[str, Any] = {"mqtt.url": mosquitto.url,
                                 "database.url": request.getfixturevalue("postgres_db").async_url}
    first = await start_server(server_config(tmp_path / "data", **overrides), clock)
    second = await start_server(server_config(tmp_path / "data", **overrides), clock)
    try:
        for srv in (first, second):
            link = srv.mqtt.link
            assert link is not None
            await wait_for(link.connected.is_set, what="link up")
            assert link.stats.shared
        api = Api(first.url, session, first.services.datadir.admin_token.read_text().strip())
        device = await api.enroll(clock)
        chain = [device.event("start"), *(device.manifest(make_chunk()) for _ in range(18)), device.event("stop")]
        async with DeviceMqtt(device, mosquitto.url) as m:
            for env in chain:
                await m.entry(env)
            await eventually(lambda: _all(api, device.device_id, len(chain)), what="all entries")
        handled = [srv.mqtt.stats()["accepted"].get("entry", 0) for srv in (first, second)]
        assert sum(handled) == len(chain) and min(handled) > 0, handled
        assert all(srv.mqtt.stats()["refused_total"] == 0 for srv in (first, second))
    finally:
        await second.stop()
        await first.stop()
