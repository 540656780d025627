"""Commands over a real Mosquitto, checked on the device side by the agent's own checklist.

The server's commands pass agent/commands.py's CommandGate (signature by a server key the device
learned at enrollment, addressee, validity window, replay, kind); acknowledgements are recorded
(first one wins); replays and expired commands are refused by the device and the refusal is
recorded with its reason; commands go out again when the device comes online; assignment changes
push assign_officer; who may send what.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.commands import CommandGate, SeenCommands
from custody.clock import FakeClock
from protocol.envelope import Envelope
from protocol.messages import Command
from server.app import RunningServer
from tests.helpers.device import SimDevice
from tests.helpers.device_mqtt import DeviceMqtt, eventually, wait_for
from tests.integration.server.conftest import Api
from tests.services.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

DAY = 86_400_000


def gate_for(device: SimDevice, clock: FakeClock, tmp_path: Path) -> CommandGate:
    """The agent's checklist for ``device``, trusting the server keys of its enrollment answer."""
    assert device.answer is not None
    keys = [k.verify_key for k in device.answer.server_keys]
    return CommandGate(device.key, lambda: keys, clock, SeenCommands(tmp_path / f"seen-{device.device_id}.json"))


async def commands_of(api: Api, device_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await api.ok("GET", f"/api/v1/devices/{device_id}/commands"))["commands"]
    return found


async def status_of_command(api: Api, device_id: str, command_id: str) -> str:
    return str(next(c["status"] for c in await commands_of(api, device_id) if c["id"] == command_id))


async def test_commands_are_signed_acknowledged_and_replays_refused(
        mq_server: RunningServer, mq_admin: Api, clock: FakeClock, mosquitto: MosquittoBroker,
        tmp_path: Path) -> None:
    device = await mq_admin.enroll(clock)
    other = await mq_admin.enroll(clock)
    gate = gate_for(device, clock, tmp_path)
    async with DeviceMqtt(device, mosquitto.url) as m:
        sent = await mq_admin.ok("POST", f"/api/v1/devices/{device.device_id}/commands",
                                 {"kind": "select_step", "params": {"case_step": "case-9:step-2"}, "ttl_s": 120},
                                 status=201)
        assert sent["status"] == "sent" and sent["publish_count"] == 1
        await wait_for(lambda: len(m.received["cmd"]) == 1, what="command delivered")
        raw = m.received["cmd"][0]
        assert raw == sent["envelope"].encode("ascii")

        # The device's own checklist accepts it: signed by the server key pinned at enrollment, for
        # this device, valid now, new, of a known kind.
        verdict = gate.check(raw)
        assert verdict.command is not None and verdict.ack is None, verdict.reason
        assert (verdict.command.kind, verdict.command.params) == ("select_step", {"case_step": "case-9:step-2"})
        assert verdict.command.expires_ms == verdict.command.issued_ms + 120_000
        await m.ack(gate.ack(verdict.command.id, "ok", result={"case_step": "case-9:step-2"}).sign(device.key))
        await eventually(lambda: _is(mq_admin, device.device_id, sent["id"], "ok"), what="ack recorded")
        listed = (await commands_of(mq_admin, device.device_id))[0]
        assert listed["ack"]["result"] == {"case_step": "case-9:step-2"}
        assert listed["actor"] == "user:admin"

        # The same bytes again (a replay by whoever can publish on the topic): the device refuses
        # and says why; the first acknowledgement stays the record.
        replay = gate.check(raw)
        assert replay.command is None and replay.ack is not None and replay.ack.status == "refused"
        assert replay.reason is not None and replay.reason.startswith("replayed")
        await m.ack(replay.ack.sign(device.key))
        await eventually(lambda: _accepted(mq_server, "ack", 2), what="second ack handled")
        assert await status_of_command(mq_admin, device.device_id, sent["id"]) == "ok"

        # Another device's gate refuses a command that is not addressed to it.
        wrong = gate_for(other, clock, tmp_path).check(raw)
        assert wrong.ack is not None and wrong.reason is not None and wrong.reason.startswith("wrong_device")

        # An expired command is refused by the device, and the refusal is what the server records.
        short = await mq_admin.ok("POST", f"/api/v1/devices/{device.device_id}/commands",
                                  {"kind": "ping", "ttl_s": 1}, status=201)
        await wait_for(lambda: len(m.received["cmd"]) == 2, what="second command")
        clock.advance(2)
        late = gate.check(m.received["cmd"][1])
        assert late.ack is not None and late.ack.status == "refused" and late.ack.command_id == short["id"]
        await m.ack(late.ack.sign(device.key))
        await eventually(lambda: _is(mq_admin, device.device_id, short["id"], "refused"), what="refusal recorded")
        refused = next(c for c in await commands_of(mq_admin, device.device_id) if c["id"] == short["id"])
        assert refused["ack"]["reason"].startswith("expired")

        # An ack that is not the device's (signed by another device's key) is refused by the server.
        forged = gate.ack(sent["id"], "failed", "forged").sign(other.key)
        await m.ack(forged)
        await wait_for(lambda: mq_server.mqtt.stats()["refused_total"] == 1, what="forged ack refused")
    assert mq_server.mqtt.stats()["refused"] == {"ack:unknown_key": 1}


async def _is(api: Api, device_id: str, command_id: str, status: str) -> bool:
    return await status_of_command(api, device_id, command_id) == status


async def _accepted(server: RunningServer, kind: str, n: int) -> bool:
    return bool(server.mqtt.stats()["accepted"].get(kind, 0) >= n)


async def test_unacknowledged_commands_go_out_again_when_the_device_comes_online(
        mq_server: RunningServer, mq_admin: Api, clock: FakeClock, mosquitto: MosquittoBroker,
        tmp_path: Path) -> None:
    device = await mq_admin.enroll(clock)
    # The device is away: the broker (no session for it) drops the command, which stays unacknowledged.
    sent = await mq_admin.ok("POST", f"/api/v1/devices/{device.device_id}/commands", {"kind": "start"}, status=201)
    assert sent["status"] == "sent"
    async with DeviceMqtt(device, mosquitto.url) as m:
        await m.online()
        await wait_for(lambda: len(m.received["cmd"]) >= 1, what="command re-sent on online")
        verdict = gate_for(device, clock, tmp_path).check(m.received["cmd"][0])
        assert verdict.command is not None and verdict.command.id == sent["id"]
        await m.ack(CommandGate.ack(gate_for(device, clock, tmp_path), sent["id"], "ok").sign(device.key))
        await eventually(lambda: _is(mq_admin, device.device_id, sent["id"], "ok"), what="ack")
        view = (await commands_of(mq_admin, device.device_id))[0]
        assert view["publish_count"] >= 2


async def test_assignment_changes_push_assign_officer(mq_server: RunningServer, mq_admin: Api, clock: FakeClock,
                                                      mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    await mq_admin.ok("POST", "/api/v1/officers", {"id": "off-7", "name": "N", "unit": "U", "cert_number": "C-7",
                                                   "cert_expires_ms": clock.now_ms() + 365 * DAY})
    device = await mq_admin.enroll(clock)
    gate = gate_for(device, clock, tmp_path)
    async with DeviceMqtt(device, mosquitto.url) as m:
        assigned = await mq_admin.ok("POST", f"/api/v1/devices/{device.device_id}/assignments",
                                     {"officer_id": "off-7"}, status=201)
        assert assigned["command_id"]
        await wait_for(lambda: len(m.received["cmd"]) == 1, what="assign_officer")
        cmd = gate.check(m.received["cmd"][0]).command
        assert cmd is not None and cmd.kind == "assign_officer" and cmd.params["officer_id"] == "off-7"
        clock.advance(1)
        ended = await mq_admin.ok("POST", f"/api/v1/devices/{device.device_id}/unassign")
        assert ended["command_id"]
        await wait_for(lambda: len(m.received["cmd"]) == 2, what="assign_officer (none)")
        cmd = gate.check(m.received["cmd"][1]).command
        assert cmd is not None and cmd.kind == "assign_officer" and cmd.params["officer_id"] is None


async def test_who_may_send_what(mq_server: RunningServer, mq_admin: Api, clock: FakeClock) -> None:
    await mq_admin.ok("POST", "/api/v1/officers", {"id": "alice", "name": "A", "unit": "U", "cert_number": "C-A",
                                                   "cert_expires_ms": clock.now_ms() + 365 * DAY})
    mine, theirs = await mq_admin.enroll(clock), await mq_admin.enroll(clock)
    await mq_admin.ok("POST", f"/api/v1/devices/{mine.device_id}/assignments", {"officer_id": "alice"})
    alice = await mq_admin.user("alice", "officer")  # the officer's account name is their officer id
    sup = await mq_admin.user("sup", "supervisor")
    devadmin = await mq_admin.user("dev", "device_admin")
    aud = await mq_admin.user("aud", "auditor")

    async def send(api: Api, device: SimDevice, body: dict[str, Any]) -> tuple[int, str | None]:
        r = await api.call("POST", f"/api/v1/devices/{device.device_id}/commands", body)
        return r.status, r.code if r.status >= 400 else None

    for kind in ("start", "stop"):
        assert await send(alice, mine, {"kind": kind}) == (201, None)
    assert await send(alice, mine, {"kind": "select_step", "params": {"case_step": "c-1"}}) == (201, None)
    assert await send(alice, theirs, {"kind": "start"}) == (403, "forbidden_command")
    assert await send(alice, mine, {"kind": "config", "params": {"x": 1}}) == (403, "forbidden_command")
    assert await send(sup, mine, {"kind": "live_view_start"}) == (201, None)
    assert await send(sup, mine, {"kind": "live_view_stop"}) == (201, None)
    assert await send(sup, mine, {"kind": "start"}) == (403, "forbidden_command")
    assert await send(devadmin, theirs, {"kind": "config", "params": {"chunk_s": 5}}) == (201, None)
    assert await send(aud, mine, {"kind": "ping"}) == (403, "forbidden_role")
    # Officers read the commands of their own device only.
    assert (await alice.call("GET", f"/api/v1/devices/{mine.device_id}/commands")).status == 200
    assert (await alice.call("GET", f"/api/v1/devices/{theirs.device_id}/commands")).code == "forbidden_command"
    # Closed set of kinds, checked parameters and bounds.
    assert await send(mq_admin, mine, {"kind": "self_destruct"}) == (400, "bad_value")
    assert await send(mq_admin, mine, {"kind": "select_step"}) == (400, "bad_params")
    assert await send(mq_admin, mine, {"kind": "assign_officer", "params": {"officer_id": "no spaces"}}) == \
        (400, "bad_params")
    assert await send(mq_admin, mine, {"kind": "ping", "ttl_s": 86_401}) == (400, "out_of_range")
    assert await send(mq_admin, mine, {"kind": "config", "params": {"ratio": 0.5}}) == (400, "bad_params")
    assert await send(mq_admin, mine, {"kind": "ping", "params": {"pad": "x" * 5000}}) == (400, "bad_params")
    # Every accepted command is a valid signed Command as stored.
    for c in await commands_of(mq_admin, mine.device_id):
        env = Envelope.from_bytes(c["envelope"].encode("ascii"))
        cmd = Command.open(env, mq_server.services.keyring.history[0].verify_key)
        assert cmd.device_id == mine.device_id and cmd.params == c["params"]
